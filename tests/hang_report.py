"""What a hanging test was waiting for: every pending asyncio task's stack, printed
shortly before pytest-timeout ends the test (its own report shows only the threads,
and an event loop's thread is only ever seen waiting in ``select``)."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator

import pytest

LEAD_S = 10.0  # how long before the timeout the tasks are printed


def _pending_tasks() -> list[asyncio.Task[object]]:
    # asyncio keeps every task of every loop in one weak set; read from another thread
    # it may change while copied, so the copy is retried.
    registry = asyncio.tasks._all_tasks  # type: ignore[attr-defined]
    for _ in range(10):
        try:
            return [task for task in list(registry) if not task.done()]
        except RuntimeError:
            continue
    return []


def _awaiting(task: asyncio.Task[object]) -> list[str]:
    """Where the task waits: its coroutine, then what that awaits, down the chain."""
    lines: list[str] = []
    awaited: object = task.get_coro()
    while awaited is not None and len(lines) < 30:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            lines.append(f"    {code.co_filename}:{frame.f_lineno} in {code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return lines


def print_pending_tasks(nodeid: str) -> None:
    out = sys.__stderr__ or sys.stderr
    tasks = _pending_tasks()
    print(f"\n--- {nodeid}: {len(tasks)} pending asyncio tasks ---", file=out)
    for task in tasks:
        try:
            print(f"  {task.get_name()}:", *_awaiting(task), sep="\n", file=out)
        except Exception as exc:  # a task finishing while printed
            print(f"  {task!r}: {exc}", file=out)
    out.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    timeout = item.config.getoption("timeout", None) or item.config.getini("timeout")
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        timeout = marker.args[0]
    seconds = float(timeout or 0)
    timer = None
    if seconds > LEAD_S:
        timer = threading.Timer(seconds - LEAD_S, print_pending_tasks, (item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
