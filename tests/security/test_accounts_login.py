"""Logins: scrypt off the event loop, bounded; wrong passwords slow the guesser down."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from node.accounts.passwords import PasswordHasher, hash_password
from node.accounts.throttle import LoginThrottle
from node.app import Node
from node.errors import TooManyRequests
from node.ratelimit import BackoffLimiter

PASSWORD = "correct horse battery"


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_limiter_frees_a_few_then_doubles_up_to_a_cap_and_forgets() -> None:
    clock = Clock()
    limiter = BackoffLimiter(free=2, base_s=1, max_s=5, forget_s=60, max_keys=3, clock=clock)
    assert [limiter.hit("a") for _ in range(6)] == [0, 0, 1, 2, 4, 5]
    assert limiter.retry_after("a") == 5
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("a", "tries")
    assert refused.value.retry_after_s == 5 and refused.value.status == 429
    limiter.check("b")  # another key is free
    clock.now += 5
    limiter.check("a")  # waited long enough; the count stays until forgotten
    assert limiter.hit("a") == 5
    clock.now += 65
    assert limiter.retry_after("a") == 0 and limiter.hit("a") == 0  # forgotten
    limiter.reset("a")
    for key in "wxyz":
        limiter.hit(key)
    assert len(limiter) == 3  # the oldest key went first


async def test_hashing_runs_off_the_event_loop() -> None:
    hasher = PasswordHasher(concurrency=1, queue=0)
    stored = hash_password(PASSWORD)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    try:
        assert await hasher.verify(PASSWORD, stored)
    finally:
        ticker.cancel()
    assert ticks > 2  # the loop kept turning while scrypt ran


async def test_hashing_concurrency_is_bounded() -> None:
    hasher = PasswordHasher(concurrency=1, queue=1)
    stored = hash_password(PASSWORD)
    running = [asyncio.create_task(hasher.verify("x" * 8, stored)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(TooManyRequests):
        await hasher.verify(PASSWORD, stored)
    assert await asyncio.gather(*running) == [False, False]
    assert await hasher.verify(PASSWORD, stored)  # room again


@pytest.fixture
def clock(node: Node) -> Clock:
    clock = Clock()
    node.accounts.throttle = LoginThrottle(per_account=5, per_address=20, clock=clock)
    return clock


async def _login(client: TestClient, name: str, password: str) -> tuple[int, str | None]:
    resp = await client.post("/api/auth/login", json={"username": name, "password": password})
    if resp.status == 429:
        assert (await resp.json())["error"] == "too_many_requests"
    return resp.status, resp.headers.get("Retry-After")


async def test_eighty_wrong_passwords_then_the_right_one_is_429(
    client: TestClient, node: Node, clock: Clock
) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    statuses = [(await _login(client, "alice", f"guess-{i:04}"))[0] for i in range(80)]
    assert statuses == [401] * 6 + [429] * 74
    assert await _login(client, "alice", PASSWORD) == (429, "1")

    clock.now += 1  # waited: one more guess is checked, and doubles the wait
    assert await _login(client, "alice", "guess-more") == (401, None)
    assert await _login(client, "alice", PASSWORD) == (429, "2")
    clock.now += 2
    assert (await _login(client, "alice", PASSWORD))[0] == 200
    assert (await _login(client, "alice", "wrong-again"))[0] == 401  # the count started over


async def test_parallel_guesses_count_like_guesses_in_a_row(
    client: TestClient, node: Node, clock: Clock
) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    results = await asyncio.gather(*(_login(client, "alice", f"guess-{i:04}") for i in range(9)))
    assert sorted(status for status, _ in results) == [401] * 6 + [429] * 3


async def test_one_address_guessing_many_accounts_is_slowed_down(
    client: TestClient, node: Node, clock: Clock
) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    for i in range(20):
        assert (await _login(client, f"user{i}", "wrong-password"))[0] == 401
    assert (await _login(client, "user20", "wrong-password"))[0] == 401
    assert await _login(client, "alice", PASSWORD) == (429, "1")  # the address waits


async def test_the_login_page_says_429_with_retry_after(
    client: TestClient, node: Node, clock: Clock
) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    for i in range(6):
        await _login(client, "alice", f"guess-{i:04}")
    form = await client.get("/login")
    token = client.session.cookie_jar.filter_cookies(client.make_url("/"))["civitas_form"].value
    assert form.status == 200
    resp = await client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "/"},
        allow_redirects=False,
    )
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    assert "try again in 1 second" in await resp.text()


@pytest.mark.parametrize("name", ["\ud800", "a" * 5000, "", "../x", "al\x00ice"])
async def test_impossible_names_are_a_plain_401(client: TestClient, name: str) -> None:
    resp = await client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
    assert resp.status in (400, 401)
    assert (await resp.json())["error"] in ("bad_request", "unauthorized")
