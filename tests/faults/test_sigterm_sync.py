"""SIGTERM while a node pulls a large record set from a peer (issue 14), on real
`civitas serve` processes: it exits within server.shutdown_timeout_s, cleanly (the sync
request in flight answered 503), and after a restart the next sync finishes the pull with
no record lost or duplicated, integrity ok (tests/faults/killing.py,
``sigterm_during_sync``; bench/faults.py reports its time too)."""

from __future__ import annotations

from pathlib import Path

from tests.faults import killing

LIMIT_S = 4


def test_sigterm_during_a_sync_stops_in_time_and_the_next_sync_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    # 40 pages of 200 records: the pull takes seconds, so SIGTERM lands mid-way
    took = killing.sigterm_during_sync(tmp_path, records=8000, limit_s=LIMIT_S)
    assert took <= LIMIT_S + 1, f"SIGTERM during a sync took {took:.1f} s to stop"
