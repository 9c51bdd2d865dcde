"""CPU-heavy work runs at a lower CPU priority than the event loop's thread: password
hashing in threads, image decodes in processes of their own.

On a machine with few cores, a flood of preview resizes or logins would otherwise take
the CPU from the thread that answers every other request: ``/healthz`` went from 3 ms to
over 100 ms under 40 preview requests on 2 cores. The kernel schedules threads, so a
worker lowers its own priority (Linux applies ``setpriority`` to one thread when given
its thread id); the work still runs at full speed when the CPU is otherwise idle.

A lower priority is enough for scrypt, which lets go of Python's GIL while it hashes.
Pillow does not for much of a decode or resize (tens of ms at a time), and a niced
thread that holds the GIL while other processes take the CPU makes the event loop wait
for it (a priority inversion): with other work on both cores, /healthz waited up to
400 ms behind six resizes of a 36 MP JPEG. So image decodes run in a pool of processes
(:func:`run_in_process`), each with its own GIL, niced the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from node.errors import CivitasError

T = TypeVar("T")

NICENESS = 10  # added to the process's: a background thread gets ~1/10 of a busy CPU
_POOL_THREADS = 8  # callers bound their own concurrency; this only caps the threads
_POOL_PROCESSES = 8  # the same for processes; each is started when first needed
DECODER_RETRY_AFTER_S = 5

_pool: ThreadPoolExecutor | None = None
_processes: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


class DecoderFailed(CivitasError):
    """A decode process died (killed for memory, or crashed on its input): whatever it
    and the others were doing at that moment is answered this; the pool starts again."""

    code = "decoder_failed"
    status = 503
    retry_after_s = DECODER_RETRY_AFTER_S


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


def _start_process() -> None:
    """A decode process: niced like the background threads; Ctrl-C is its parent's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lower_priority()


def _shared_processes() -> ProcessPoolExecutor:
    global _processes
    with _pool_lock:
        if _processes is None:
            _processes = ProcessPoolExecutor(
                _POOL_PROCESSES,
                # spawned, not forked: a fork of this process would copy its threads' locks
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_process,
            )
        return _processes


def _forget(broken: ProcessPoolExecutor) -> None:
    global _processes
    with _pool_lock:
        if _processes is broken:
            _processes = None
    broken.shutdown(wait=False, cancel_futures=True)


async def run_in_process(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in one of the process's low-priority decode processes. ``fn`` is a
    module-level function and ``args`` and its result pickle (paths rather than large
    bytes where the caller has a file). A process that dies fails the calls it and the
    others had (:class:`DecoderFailed`); the next call starts a new pool."""
    pool = _shared_processes()
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
    except BrokenProcessPool:
        _forget(pool)
        raise DecoderFailed(
            f"the image decoder stopped while it worked: retry in {DECODER_RETRY_AFTER_S} s"
        ) from None
