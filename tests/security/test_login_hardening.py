"""Issue 13: an owner's known address outlives a restart; strangers cannot take every
password-hashing slot."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.accounts.passwords import PasswordHasher, hash_password
from node.accounts.throttle import LoginThrottle
from node.app import Node, build_node, create_app
from node.errors import TooManyRequests

PASSWORD = "correct horse battery"
HOME = "198.51.100.20"


async def _proxied(node: Node) -> TestClient:
    node.config.server.trusted_proxies = "127.0.0.1"
    client = TestClient(TestServer(create_app(node, node.home.admin_token()), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def behind_proxy(node: Node) -> AsyncIterator[TestClient]:
    client = await _proxied(node)
    yield client
    await client.close()


async def _login(client: TestClient, forwarded_for: str, name: str, password: str) -> int:
    resp = await client.post(
        "/api/auth/login",
        json={"username": name, "password": password},
        headers={"X-Forwarded-For": forwarded_for},
    )
    if resp.status >= 400:
        assert "error" in await resp.json()
    return resp.status


# --- (4) the addresses an account logged in from outlive a restart ------------------------


async def test_the_owner_is_not_a_stranger_after_a_restart(node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    first = await _proxied(node)
    try:
        assert await _login(first, HOME, "alice", PASSWORD) == 200
    finally:
        await first.close()

    restarted = build_node(node.config, node.home)  # a new process on the same database
    restarted.accounts.throttle = LoginThrottle(
        per_account=5, per_address=20, per_account_overall=5
    )
    client = await _proxied(restarted)
    try:
        botnet = [f"203.0.113.{i}" for i in range(1, 12)]
        statuses = [await _login(client, a, "alice", "guess-guess") for a in botnet]
        assert statuses == [401] * 6 + [429] * 5  # strangers wait for this account ...
        assert await _login(client, "192.0.2.1", "alice", PASSWORD) == 429
        assert await _login(client, HOME, "alice", PASSWORD) == 200  # ... not its owner
    finally:
        await client.close()
        await restarted.db.close()


async def test_an_account_keeps_only_its_most_recent_addresses(node: Node) -> None:
    from node.accounts.login_addresses import MAX_PER_ACCOUNT, LoginAddresses

    user = await node.accounts.add_user("alice", PASSWORD)
    store = LoginAddresses(node.db)
    for i in range(MAX_PER_ACCOUNT + 5):
        await store.remember(user.id, f"198.51.100.{i}", now=1000 + i)
    await store.remember(user.id, "198.51.100.0", now=5000)  # used again: kept
    assert await store.known("alice", "198.51.100.0")
    assert not await store.known("alice", "198.51.100.1")  # the oldest went
    assert await store.known("alice", f"198.51.100.{MAX_PER_ACCOUNT + 4}")
    assert not await store.known("bob", "198.51.100.0")
    assert await store.count(user.id) == MAX_PER_ACCOUNT


async def _until(done: Callable[[], bool]) -> None:
    """Wait (bounded) until ``done()``: the hasher's count is plain state, with no event."""
    async with asyncio.timeout(60):
        while True:
            if done():
                return
            await asyncio.sleep(0.005)


# --- (5) a flood of strangers does not take the owner's hashing slot ----------------------


async def test_a_flood_of_strangers_does_not_refuse_the_owner(
    behind_proxy: TestClient, node: Node
) -> None:
    node.accounts.hasher = PasswordHasher(concurrency=1, queue=4)
    await node.accounts.add_user("alice", PASSWORD)
    assert await _login(behind_proxy, HOME, "alice", PASSWORD) == 200
    hasher = node.accounts.hasher
    stop = asyncio.Event()
    refused = 0

    async def stranger(worker: int) -> None:
        nonlocal refused
        i = 0
        while not stop.is_set():
            i += 1
            address = f"2001:db8:{worker:x}:{i:x}::1"  # a new /64 each time
            name = f"u{secrets.token_hex(4)}"
            if await _login(behind_proxy, address, name, "wrong password") == 429:
                refused += 1

    flood = [asyncio.create_task(stranger(w)) for w in range(24)]
    try:
        owner = []
        for _ in range(6):
            await _until(lambda: hasher.waiting >= hasher.concurrency + hasher.queue)
            owner.append(await _login(behind_proxy, HOME, "alice", PASSWORD))
    finally:
        stop.set()
        await asyncio.gather(*flood)
    assert owner == [200] * 6
    assert refused > 0  # strangers were bounded, not the owner


async def test_a_known_login_goes_before_queued_strangers() -> None:
    hasher = PasswordHasher(concurrency=1, queue=2)
    stored = hash_password(PASSWORD)
    done: list[str] = []

    async def check(tag: str, known: bool) -> None:
        await hasher.verify("wrong password", stored, known=known)
        done.append(tag)

    first = asyncio.create_task(check("first", False))
    await asyncio.sleep(0)  # it has the thread
    strangers = [asyncio.create_task(check(f"s{i}", False)) for i in range(2)]
    await asyncio.sleep(0)  # they queue
    with pytest.raises(TooManyRequests):  # the strangers' queue is full ...
        await hasher.verify("wrong password", stored)
    owner = asyncio.create_task(check("owner", True))  # ... the owner's is not
    await asyncio.sleep(0)
    strangers[0].cancel()  # one gives up waiting: its place is freed
    await asyncio.gather(first, strangers[1], owner)
    assert done == ["first", "owner", "s1"]
    assert hasher.waiting == 0
    assert await hasher.verify(PASSWORD, stored)
