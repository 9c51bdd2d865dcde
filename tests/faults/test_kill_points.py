"""kill -9 at several points of publish, upload, fetch, sync and a job's output upload,
on real `civitas serve` processes (issue 14): after each kill the database passes
integrity_check, the node starts, no temp file is left, every stored file is whole and
claimed, and nothing the node acknowledged is lost. A few points per operation here;
bench/faults.py runs many (``--points``) and reports the count and the shutdown time
under load."""

from __future__ import annotations

from pathlib import Path

from tests.faults import killing


def test_kill_9_during_publish_by_path(tmp_path: Path) -> None:
    assert killing.kill_publish(tmp_path, points=2, megabytes=16) == 2


def test_kill_9_during_upload(tmp_path: Path) -> None:
    assert killing.kill_upload(tmp_path, points=2, megabytes=16) == 2


def test_kill_9_during_fetch_resumes_and_every_file_arrives_whole(tmp_path: Path) -> None:
    assert killing.kill_fetch(tmp_path, points=2, files=2, megabytes=6) == 2


def test_kill_9_during_sync_loses_no_record(tmp_path: Path) -> None:
    assert killing.kill_sync(tmp_path, points=2, models=12) == 2


def test_kill_9_during_a_job_output_upload_keeps_the_job_and_no_torn_output(
    tmp_path: Path,
) -> None:
    assert killing.kill_job_upload(tmp_path, points=3, side=512) == 3
