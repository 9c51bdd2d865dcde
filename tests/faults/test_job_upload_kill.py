"""kill -9 while a worker uploads a job's output (issue 14), on real `civitas serve`
processes: what the job becomes when the node comes back.

The kill loop itself (the lease survives, the upload sent again completes the job) is in
tests/faults/killing.py (``kill_job_upload``, run by test_kill_points.py and
bench/faults.py). Here: a lease that ran out while the node was down, and outputs of an
earlier attempt left on disk by a kill between the requeue and their removal.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from tests.faults import killing

POLL_S = 0.05


def _wait_state(bench: killing.JobBench, job_id: int, state: str, within_s: float) -> dict:
    deadline = time.monotonic() + within_s
    seen: dict = {}
    while time.monotonic() < deadline:
        seen = bench.job(job_id)
        if seen["state"] == state:
            return seen
        time.sleep(POLL_S)
    raise AssertionError(f"job {job_id} is not {state} within {within_s} s: {seen}")


@killing.leaves_no_node
def test_a_lease_that_ran_out_while_the_node_was_down_requeues_the_job_with_a_reason(
    tmp_path: Path,
) -> None:
    bench = killing.JobBench(tmp_path, lease_s=2)
    lease = bench.leased(side=256, seed=1)
    data = killing.noise_png(lease, seed=1)
    # killed just after the node acknowledged the upload, then down past the lease's end
    assert bench.worker.upload_killed(lease["id"], data, at=1.5) == 201
    while time.time() * 1000 <= lease["lease_until"]:
        time.sleep(POLL_S)
    killing.integrity(bench.node.home)
    bench.node.start()
    killing.store_sound(bench.node.home)

    requeued = _wait_state(bench, lease["id"], "queued", within_s=10)
    assert "stopped reporting" in requeued["error"], requeued
    assert not (bench.node.home / "compute" / "outputs" / str(lease["id"])).exists(), (
        "the lost attempt's upload was kept"
    )
    status, _ = bench.worker.upload(lease["id"], data)
    assert status == 409, "a worker whose lease ran out could still upload"

    again = bench.leased_again(lease["id"])
    assert bench.worker.upload(again["id"], data)[0] == 201
    status, answer = bench.worker.result(again["id"], [data])
    assert status == 200 and answer["state"] == "done", answer
    assert bench.output(again["id"], data) == (200, data)
    bench.node.stop()


@killing.leaves_no_node
def test_outputs_of_an_earlier_attempt_left_by_a_kill_do_not_block_the_next_worker(
    tmp_path: Path,
) -> None:
    """A kill between a job's requeue (committed) and the removal of its uploads leaves
    the first attempt's output in the job's folder; the next worker to take the job must
    be able to upload its own, not be told the job's outputs are all uploaded already."""
    bench = killing.JobBench(tmp_path, lease_s=600)
    lease = bench.leased(side=64, seed=2)
    status, answer = bench.worker.call(
        "POST", f"/api/compute/jobs/{lease['id']}/fail", {"error": "out of memory"}
    )
    assert (status, answer["state"]) == (200, "queued"), answer
    bench.node.kill9()
    # what the kill left: the failed attempt's (whole) output, not yet removed
    earlier = killing.noise_png(lease, seed=99)
    folder = bench.node.home / "compute" / "outputs" / str(lease["id"])
    folder.mkdir(parents=True)
    (folder / hashlib.sha256(earlier).hexdigest().upper()).write_bytes(earlier)
    bench.node.start()

    again = bench.leased_again(lease["id"])
    data = killing.noise_png(again, seed=3)
    status, answer = bench.worker.upload(again["id"], data)
    assert status == 201, f"the next attempt's upload answered {status}: {answer}"
    status, answer = bench.worker.result(again["id"], [data])
    assert status == 200 and answer["state"] == "done", answer
    assert bench.output(again["id"], data) == (200, data)
    bench.node.stop()
