"""What a hanging test was waiting for: shortly before pytest-timeout ends a test, every
pending asyncio task's await chain is printed and the test's own task is cancelled, so the
failure shows the line it waited on (pytest-timeout shows only threads, and an event
loop's thread is only ever seen waiting in ``select``)."""

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
        elif isinstance(awaited, asyncio.Future):
            lines.append(f"    {awaited!r}"[:300])
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return lines


def _is_the_test(task: asyncio.Task[object], item: pytest.Item) -> bool:
    name = getattr(item, "originalname", item.name)
    awaited: object = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None and frame.f_code.co_name == name:
            return frame.f_code.co_filename == str(item.path)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return False


def report_hang(item: pytest.Item) -> None:
    """Print every pending task's await chain (to the captured output, which the failure
    report shows, and to the terminal), then cancel the test's own task, so that the
    failure's traceback ends at the very line it waited on."""
    tasks = _pending_tasks()
    lines = [f"--- {item.nodeid}: {len(tasks)} pending asyncio tasks ---"]
    for task in tasks:
        try:
            lines += [f"  {task.get_name()}:", *_awaiting(task)]
        except Exception as exc:  # a task finishing while printed
            lines.append(f"  {task!r}: {exc}")
    text = "\n".join(lines)
    print("\n" + text, file=sys.stdout, flush=True)
    for task in tasks:
        if _is_the_test(task, item):
            task.get_loop().call_soon_threadsafe(
                task.cancel, f"hang report: no progress {LEAD_S:.0f} s before the timeout"
            )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    timeout = item.config.getoption("timeout", None) or item.config.getini("timeout")
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        timeout = marker.args[0]
    seconds = float(timeout or 0)
    timer = None
    if seconds > LEAD_S:
        timer = threading.Timer(seconds - LEAD_S, report_hang, (item,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
