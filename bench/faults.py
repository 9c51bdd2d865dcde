"""kill -9 at many points of publish, upload, fetch, sync and a compute job's output
upload, and the shutdown time under load (issue 14), against real `civitas serve`
processes on 127.0.0.1.

Prints the kill points tried per operation (each followed by integrity_check, a restart
and the store checks of tests/faults/killing.py; for a job upload also the job's state,
its kept outputs and the upload sent again) and how long SIGTERM took with an upload
streaming in and with a sync pulling 20,000 records. Run: ``.venv/bin/python
bench/faults.py [--points N]`` (N per operation, default 15: 75 in all; a few minutes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults import killing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=15, help="kill points per operation")
    args = parser.parse_args()
    total = 0
    with tempfile.TemporaryDirectory(prefix="civitas-faults-") as tmp:
        base = Path(tmp)
        runs = [
            ("publish", lambda b: killing.kill_publish(b, args.points, megabytes=32)),
            ("upload", lambda b: killing.kill_upload(b, args.points, megabytes=32)),
            ("fetch", lambda b: killing.kill_fetch(b, args.points, files=4, megabytes=16)),
            ("sync", lambda b: killing.kill_sync(b, args.points, models=60)),
            ("job", lambda b: killing.kill_job_upload(b, args.points, side=1448)),
        ]
        for name, run in runs:
            (base / name).mkdir()
            started = time.monotonic()
            tried = run(base / name)
            total += tried
            took_s = time.monotonic() - started
            print(f"{name:8} {tried:3} kill points  ok  {took_s:6.1f} s", flush=True)
        print(f"total    {total:3} kill points, every one: integrity ok, node started, store sound")
        (base / "load").mkdir()
        took = [killing.shutdown_under_load(base / "load", megabytes=128) for _ in range(3)]
        print(f"shutdown under load (SIGTERM, a 128 MB upload streaming): max {max(took):.2f} s")
        (base / "sync-term").mkdir()
        took_sync = killing.sigterm_during_sync(base / "sync-term", records=20_000, limit_s=10)
        print(
            f"shutdown during a sync (SIGTERM, 20,000 records being pulled): {took_sync:.2f} s;"
            " restarted, the next sync lost and repeated no record"
        )


if __name__ == "__main__":
    main()
