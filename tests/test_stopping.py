"""A service's stop ends its loops whatever they are doing: a wake-up that lands in the
same moment as the stop must not swallow the cancellation (Python 3.11's
``asyncio.wait_for`` returns the inner result and drops a cancel that arrives just as
the inner wait completes; the loop then waited out its whole interval again, and the
app's cleanup, hence a test or a node's shutdown, hung)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from node.app import Node
from node.tasks import stop_tasks


def _wakers(node: Node) -> dict[str, Callable[[], None]]:
    return {
        "moderation": node.moderation._wake.set,
        "federation": node.federation.rounds.pull_now.set,
        "wanted": node.wanted._wake.set,
    }


@pytest.mark.parametrize("service", ["moderation", "federation", "wanted"])
async def test_a_wake_up_at_the_moment_of_stop_does_not_keep_the_loop_running(
    node: Node, service: str
) -> None:
    running = getattr(node, service)
    for turns in range(8):  # where, between the wake-up and the stop, the loop is
        await running.start()
        await asyncio.sleep(0.05)  # the loop is idle, waiting for a wake-up or its interval
        _wakers(node)[service]()
        for _ in range(turns):
            await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with asyncio.timeout(60):  # the intervals are 30 s and more
            await running.stop()
        assert loop.time() - began < 2, f"stop took {loop.time() - began:.1f} s"


async def test_stopping_tasks_lets_the_callers_own_cancellation_through() -> None:
    """A stop that is itself cancelled (a shutdown's deadline) ends with the cancellation,
    its tasks cancelled, instead of returning as if it had finished."""
    stubborn_cancelled = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stubborn_cancelled.set()
            await asyncio.sleep(3600)  # catches its cancel and waits on: cancelled again

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(stop_tasks([task]))
    await stubborn_cancelled.wait()
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    async with asyncio.timeout(10):
        await stop_tasks([task])  # the second cancel ends it
    assert task.cancelled()
