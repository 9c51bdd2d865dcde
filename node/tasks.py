"""asyncio helpers for the node's long-running loops, correct under Python 3.11.

- ``wait_event``: wait for an event with a timeout. ``asyncio.wait_for`` on 3.11 drops a
  cancellation that arrives just as the inner wait completes (it returns the result
  instead); a loop woken at the moment it was stopped then slept a whole interval again,
  and the app's cleanup waited for it. ``asyncio.timeout`` does not lose it.
- ``stop_tasks``: cancel tasks and wait until they end, without swallowing a cancellation
  of the caller (``suppress(CancelledError)`` around ``await task`` did), cancelling again
  any task that caught one and went on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("civitas.tasks")

RECANCEL_S = 5.0  # a task still running this long after its cancel is cancelled again


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """True once ``event`` is set; False after ``timeout_s``."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def stop_tasks(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel ``tasks`` and return when all have ended; an error one ended with is logged.
    A cancellation of the caller propagates (the tasks have been cancelled already)."""
    stopping = [task for task in tasks if task is not None]
    pending = {task for task in stopping if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
        if pending:
            names = sorted(task.get_name() for task in pending)
            log.warning(
                "tasks still running after a cancel; cancelling again", extra={"tasks": names}
            )
    for task in stopping:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task %s ended with an error", task.get_name(), exc_info=exc)
