"""The job queue through its service: validation, fairness, caps, leases, cancellation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from node.accounts.service import User
from node.app import Node
from node.compute.fairness import Capabilities, Queued, round_robin, why_nothing
from node.compute.queue import JobQueue
from node.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from node.http import Principal
from node.p2p.keys import SigningKey
from tests.compute.conftest import Version, fake_checkpoint, generate, publish


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(node: Node) -> Clock:
    clock = Clock()
    node.compute.queue.clock = clock
    return clock


@pytest.fixture
def queue(node: Node, clock: Clock) -> JobQueue:
    return node.compute.queue


async def _worker(queue: JobQueue, owner: User, seed: bytes, **data: object) -> str:
    key = SigningKey.from_seed(seed * 32)
    await queue.registry.register(owner, {"did": key.did, **data})
    return key.did


async def _node_worker(queue: JobQueue, owner: User, seed: bytes) -> str:
    """A member's worker an admin made a node worker: it serves everyone's jobs."""
    did = await _worker(queue, owner, seed)
    await queue.registry.set_serves(Principal(node_admin=True), did, "all")
    return did


# --- pure fairness -----------------------------------------------------------------------


def test_round_robin_takes_turns_oldest_lease_first() -> None:
    jobs = [Queued(1, 1, 1, "generate", 1), Queued(2, 1, 2, "generate", 1)]
    jobs += [Queued(3, 2, 3, "generate", 1), Queued(4, 3, 0, "generate", 1)]
    order = round_robin(jobs, {1: 5, 2: 10})
    assert [j.id for j in order] == [4, 1, 3, 2]  # 3 never leased, then 1, 2, then 1 again
    assert next(j.id for j in round_robin(jobs, {1: 5, 2: 10}, donor=2)) == 3


def test_why_nothing_matched_says_why_in_words() -> None:
    jobs = [Queued(1, 1, 1, "generate", 512 * 512 * 4), Queued(2, 1, 2, "generate", 2**20)]
    jobs.append(Queued(3, 2, 3, "train", 64))
    caps = Capabilities(frozenset({"generate"}), 512 * 512)
    assert why_nothing(jobs, caps, set()) == (
        "3 queued jobs: 1 is a train job and you only run generate, "
        "2 need more than your max pixels (262,144)"
    )
    assert why_nothing([], caps, set()) == "the queue is empty"


# --- submission --------------------------------------------------------------------------


async def test_bad_generation_requests_name_the_field(
    queue: JobQueue, alice: User, checkpoint: Version
) -> None:
    cases = {
        "'steps'": generate(checkpoint.id, steps=-1),
        "'width' must be a multiple of 8": generate(checkpoint.id, width=100),
        "'cfg_scale'": generate(checkpoint.id, cfg_scale="lots"),
        "unknown sampler": generate(checkpoint.id, sampler="Warp 9"),
        "compute.max_pixels": generate(checkpoint.id, width=2048, height=2048, count=2),
        "'prompt' is required": {"kind": "generate", "model_version_id": checkpoint.id},
        "unknown field 'strength'": generate(checkpoint.id, strength=1),
    }
    for message, job in cases.items():
        with pytest.raises(BadRequest) as err:
            await queue.submit(alice, job)
        assert message in err.value.message, (message, err.value.message)


async def test_unknown_model_version_is_not_found(queue: JobQueue, alice: User) -> None:
    with pytest.raises(NotFound, match="no model version 12345"):
        await queue.submit(alice, generate(12345))


async def test_licenses_are_honoured(
    node: Node, queue: JobQueue, alice: User, tmp_path: Path, make_lora: Callable[..., Path]
) -> None:
    closed = await publish(
        node,
        alice,
        fake_checkpoint(tmp_path / "closed.safetensors", 1),
        type="Checkpoint",
        name="Closed",
        uses=["Image"],
        derivatives=False,
    )
    with pytest.raises(Forbidden, match="RentCivit"):
        await queue.submit(alice, generate(closed.id))
    train = {"kind": "train", "model_version_id": closed.id, "trigger_word": "fox"}
    with pytest.raises(Forbidden, match="does not allow derivatives"):
        await queue.submit(alice, train, images=[_image()])
    lora = await publish(node, alice, make_lora(), type="LORA", name="Fox")
    with pytest.raises(BadRequest, match="not a checkpoint"):
        await queue.submit(alice, generate(lora.id))


def _image() -> object:
    from node.compute.queue import TrainImage

    return TrainImage("a.png", "A" * 64, "a fox")


async def test_a_job_reports_its_queue_position(
    queue: JobQueue, alice: User, bob: User, checkpoint: Version
) -> None:
    a1 = await queue.submit(alice, generate(checkpoint.id))
    a2 = await queue.submit(alice, generate(checkpoint.id))
    b1 = await queue.submit(bob, generate(checkpoint.id))
    assert (a1["state"], a1["position"]) == ("queued", 1)
    assert a1["params"]["seed"] == 7 and a1["params"]["cfg_scale"] == "7"
    who = Principal(user=alice)
    assert (await queue.get(a2["id"], who))["position"] == 3  # bob's turn comes first
    assert (await queue.get(b1["id"], Principal(user=bob)))["position"] == 2
    with pytest.raises(NotFound):
        await queue.get(b1["id"], who)  # not alice's job


# --- leasing -----------------------------------------------------------------------------


async def test_pop_is_round_robin_with_donors_first_and_caps(
    node: Node, queue: JobQueue, alice: User, bob: User, carol: User, checkpoint: Version
) -> None:
    node.config.compute.per_requester_running = 1
    a = [await queue.submit(alice, generate(checkpoint.id)) for _ in range(2)]
    b = [await queue.submit(bob, generate(checkpoint.id)) for _ in range(2)]
    c = await queue.submit(carol, generate(checkpoint.id))
    carols_worker = await _worker(queue, carol, b"c")
    first = await queue.pop(carols_worker, {})
    assert first["job"]["id"] == c["id"]  # the donor's own request first
    w = await _node_worker(queue, bob, b"w")
    assert (await queue.pop(w, {}))["job"]["id"] == b[0]["id"]  # bob donates w: his first
    assert (await queue.pop(w, {}))["job"]["id"] == a[0]["id"]  # bob is at the cap of 1
    nothing = await queue.pop(w, {})
    assert nothing["job"] is None
    assert nothing["reason"] == (
        "2 queued jobs: 2 wait until their requester's running jobs finish "
        "(compute.per_requester_running)"
    )


async def test_capabilities_match_and_explain(
    queue: JobQueue, alice: User, checkpoint: Version
) -> None:
    await queue.submit(alice, generate(checkpoint.id, width=512, height=512))
    small = await _worker(queue, alice, b"s", max_pixels=256 * 256, kinds=["train"])
    answer = await queue.pop(small, {})
    assert answer == {
        "job": None,
        "reason": "1 queued job: 1 is a generate job and you only run train",
    }
    small2 = await _worker(queue, alice, b"t", max_pixels=256 * 256)
    answer = await queue.pop(small2, {})
    assert answer["reason"] == "1 queued job: 1 needs more than your max pixels (65,536)"
    with pytest.raises(Unauthorized, match="not registered"):
        await queue.pop(SigningKey.from_seed(b"x" * 32).did, {})


async def test_an_expired_lease_requeues_then_fails(
    node: Node, queue: JobQueue, clock: Clock, alice: User, checkpoint: Version
) -> None:
    node.config.compute.max_failures = 2
    job = await queue.submit(alice, generate(checkpoint.id))
    w1 = await _worker(queue, alice, b"1")
    w2 = await _worker(queue, alice, b"2")
    assert (await queue.pop(w1, {}))["job"]["id"] == job["id"]
    await queue.progress(job["id"], w1, {"step": 1, "total": 2})
    assert (await queue.get(job["id"], Principal(user=alice)))["state"] == "running"
    clock.now += node.config.compute.lease_s * 1000 + 1
    assert await queue.reap() == 1
    again = await queue.get(job["id"], Principal(user=alice))
    assert (again["state"], again["attempts"], again["failures"]) == ("queued", 1, 1)
    with pytest.raises(Conflict, match="you do not hold"):
        await queue.progress(job["id"], w1, {"step": 2})
    assert (await queue.pop(w2, {}))["job"]["id"] == job["id"]
    clock.now += node.config.compute.lease_s * 1000 + 1
    await queue.reap()
    final = await queue.get(job["id"], Principal(user=alice))
    assert (final["state"], final["failures"]) == ("failed", 2)
    assert "stopped reporting" in final["error"]


async def test_progress_extends_the_lease(
    node: Node, queue: JobQueue, clock: Clock, alice: User, checkpoint: Version
) -> None:
    job = await queue.submit(alice, generate(checkpoint.id))
    w = await _worker(queue, alice, b"1")
    await queue.pop(w, {})
    for step in range(3):
        clock.now += node.config.compute.lease_s * 1000 - 1
        await queue.progress(job["id"], w, {"step": step, "total": 3, "loss": 0.5})
        assert await queue.reap() == 0
    shown = await queue.get(job["id"], Principal(user=alice))
    assert shown["progress"] == {"step": 2, "total": 3, "loss": 0.5}


async def test_worker_failures_requeue_and_cancel_stops_the_worker(
    queue: JobQueue, alice: User, bob: User, checkpoint: Version
) -> None:
    job = await queue.submit(alice, generate(checkpoint.id))
    w = await _node_worker(queue, bob, b"1")
    await queue.pop(w, {})
    assert (await queue.fail(job["id"], w, {"error": "out of memory"}))["state"] == "queued"
    await queue.pop(w, {})
    with pytest.raises(NotFound):
        await queue.cancel(job["id"], Principal(user=bob))  # not bob's job
    cancelled = await queue.cancel(job["id"], Principal(user=alice))
    assert cancelled["state"] == "cancelled"
    with pytest.raises(Conflict, match="cancelled"):
        await queue.progress(job["id"], w, {"step": 1})
    with pytest.raises(Conflict, match="cancelled already"):
        await queue.cancel(job["id"], Principal(user=alice))
    workers = await queue.registry.list(Principal(user=bob))
    assert [(x["name"], x["jobs_failed"]) for x in workers] == [(w[-8:], 1)]


async def test_stale_queued_jobs_expire(
    node: Node, queue: JobQueue, clock: Clock, alice: User, checkpoint: Version
) -> None:
    job = await queue.submit(alice, generate(checkpoint.id))
    clock.now += node.config.compute.queue_timeout_hours * 3600 * 1000 + 1
    await queue.reap()
    assert (await queue.get(job["id"], Principal(user=alice)))["state"] == "expired"


async def test_a_worker_key_belongs_to_one_donor(queue: JobQueue, alice: User, bob: User) -> None:
    did = await _worker(queue, alice, b"1")
    with pytest.raises(Conflict, match="another user"):
        await queue.registry.register(bob, {"did": did})
    assert [w["owner"] for w in await queue.registry.list(Principal(node_admin=True))] == ["alice"]
    assert await queue.registry.list(Principal(user=bob)) == []


async def test_a_members_worker_serves_only_its_members_jobs(
    node: Node, queue: JobQueue, alice: User, bob: User, checkpoint: Version
) -> None:
    job = await queue.submit(alice, generate(checkpoint.id))
    bobs = await _worker(queue, bob, b"b")
    nothing = await queue.pop(bobs, {})
    assert nothing == {
        "job": None,
        "reason": "1 queued job, none of your own: a member's worker serves only its "
        "owner's jobs until an admin makes it a node worker",
    }
    with pytest.raises(Forbidden, match="only an admin"):
        await queue.registry.set_serves(Principal(user=bob), bobs, "all")
    with pytest.raises(BadRequest, match="'serves'"):
        await queue.registry.set_serves(Principal(node_admin=True), bobs, "everyone")
    with pytest.raises(NotFound):
        await queue.registry.set_serves(Principal(node_admin=True), "did:key:z6Mkx", "all")
    admin = await node.accounts.add_user("root", "correct horse battery", role="admin")
    operators = await _worker(queue, admin, b"a")  # an admin's worker is a node worker
    assert (await queue.registry.list(Principal(user=admin), did=operators))[0]["serves"] == "all"
    assert (await queue.pop(operators, {}))["job"]["id"] == job["id"]
