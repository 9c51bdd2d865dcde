"""Image decodes and password hashing run below the event loop's CPU priority, so a
flood of them cannot starve the thread that answers every other request."""

from __future__ import annotations

import os
import threading

from node.accounts.passwords import PasswordHasher
from node.background import NICENESS, run_in_background


def _my_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_decodes_run_at_a_lower_cpu_priority_than_the_event_loop() -> None:
    loop_priority = _my_priority()
    assert await run_in_background(_my_priority) == min(19, loop_priority + NICENESS)
    assert _my_priority() == loop_priority  # the loop's own thread is untouched


async def test_password_hashing_runs_at_a_lower_cpu_priority() -> None:
    hasher = PasswordHasher(concurrency=1)
    try:
        theirs = await hasher._run(lambda *_: _my_priority())
    finally:
        hasher.close()
    assert theirs == min(19, _my_priority() + NICENESS)
