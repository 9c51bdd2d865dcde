"""CPU-heavy work (image decodes, password hashing) runs in threads at a lower CPU
priority than the event loop's thread.

On a machine with few cores, a flood of preview resizes or logins would otherwise take
the CPU from the thread that answers every other request: ``/healthz`` went from 3 ms to
over 100 ms under 40 preview requests on 2 cores. The kernel schedules threads, so a
worker thread lowers its own priority (Linux applies ``setpriority`` to one thread when
given its thread id); the work still runs at full speed when the CPU is otherwise idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

NICENESS = 10  # added to the process's: a background thread gets ~1/10 of a busy CPU
_POOL_THREADS = 8  # callers bound their own concurrency; this only caps the threads

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def lower_priority() -> None:
    """Make the calling thread nicer by NICENESS (nothing where the OS cannot)."""
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + NICENESS)


def background_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose threads run at the lowered priority."""
    return ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=lower_priority)


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = background_pool(_POOL_THREADS, "civitas-background")
        return _pool


async def run_in_background(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` on the process's shared low-priority pool, in a copy of the caller's
    context (as ``asyncio.to_thread`` runs it)."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(_shared_pool(), call)
