"""The wanted-files plan: which file to ask which peer for next (pure, exact answers)."""

from __future__ import annotations

from dataclasses import dataclass

from node.p2p.federation.wanted_plan import FetchPlan, Job


@dataclass(frozen=True)
class Item:
    sha256: str
    source: str | None
    attempts: int = 0
    added: int = 0


def job(sha: str, source: str | None, peers: list[str], attempts: int = 0) -> Job[Item]:
    return Job(Item(sha, source, attempts, added=int(sha[1:])), list(peers))


def test_one_request_per_peer_and_a_busy_preferred_peer_is_skipped_meanwhile() -> None:
    plan: FetchPlan[Item] = FetchPlan(concurrency=4, per_peer=1)
    for i in range(3):
        plan.add(job(f"h{i}", "H", ["H", "A"]))
    starts = [(j.item.sha256, peer) for j, peer in plan.next_starts()]
    assert starts == [("h0", "H"), ("h1", "A")]  # h2 waits: both peers are busy
    plan.finished("h1", done=False)  # A had no such file
    assert [(j.item.sha256, p) for j, p in plan.next_starts()] == [("h2", "A")]
    plan.finished("h2", done=False)
    assert plan.next_starts() == []  # h1 and h2 wait for H, which still stalls on h0
    assert plan.exhausted() == []


def test_sources_take_turns_whatever_their_backlog() -> None:
    plan: FetchPlan[Item] = FetchPlan(concurrency=1, per_peer=1)
    for i in range(1, 4):
        plan.add(job(f"h{i}", "H", ["X"]))
    plan.add(job("a9", "A", ["X"]))
    order = []
    while plan.jobs:
        ((started, _),) = plan.next_starts()
        order.append(started.item.sha256)
        plan.finished(started.item.sha256, done=True)
    assert order == ["h1", "a9", "h2", "h3"]


def test_first_tries_go_before_retries_and_a_job_with_no_peer_left_is_exhausted() -> None:
    plan: FetchPlan[Item] = FetchPlan(concurrency=1)
    plan.add(job("r1", None, ["X"], attempts=3))
    plan.add(job("f2", None, ["X"]))
    ((first, _),) = plan.next_starts()
    assert first.item.sha256 == "f2"
    plan.finished("f2", done=False)
    assert [j.item.sha256 for j in plan.exhausted()] == ["f2"]
    assert list(plan.jobs) == ["r1"]
