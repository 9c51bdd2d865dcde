"""Sync rounds: every peer in its own task, so no peer waits for another.

A round pulls from and then pushes to each peer at once (at most
``limits.concurrency`` together), each turn within the peer's round budgets
(:mod:`.budgets`) and time limit. Whatever goes wrong in one turn, the peer's fault or
ours (a hostile page, a full disk, a database error on a poison record), is that peer's
failure: logged with the peer named, kept as its ``last_error``, backed off; never the
end of the round for the others. News is pushed by a separate loop, again one task per
peer, so a slow pull or a slow peer delays no push to the others. Removing or blocking
a peer cancels its running turn and push.

A push that fails (the peer refuses it: it never added this node, say) is not a failure
of the pull: it is reported (``push_error``) and retried with its own backoff, kept in
memory (:class:`PushState`), while the pulls from that peer go on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from node.errors import CivitasError, NotFound
from node.p2p.federation.budgets import RoundTally
from node.p2p.outgoing import refuse_private
from node.p2p.records import now_ms
from node.tasks import stop_tasks, wait_event

if TYPE_CHECKING:
    from node.p2p.federation.service import Federation, Peer

log = logging.getLogger("civitas.federation")


def backoff_ms(failures: int) -> int:
    """Exponential backoff for a failing peer: 5 s, 10 s, 20 s … at most an hour."""
    return min(3600, 5 * 2 ** max(0, failures - 1)) * 1000


@dataclass(frozen=True)
class PushState:
    """Pushes to one peer that failed in a row: the last error, and when to try again."""

    failures: int
    error: str
    next_try: int


def _forget(tasks: dict[str, Any], did: str, task: asyncio.Task[Any]) -> None:
    if tasks.get(did) is task:
        del tasks[did]


class SyncRounds:
    """The federation's background work, and the rounds an operator starts."""

    def __init__(self, federation: Federation) -> None:
        self.fed = federation
        self.wake = asyncio.Event()  # something new to push
        self.pull_now = asyncio.Event()  # a new peer: pull without waiting for the timer
        self._slots = asyncio.Semaphore(federation.limits.concurrency)
        self._turns: dict[str, asyncio.Task[dict[str, Any]]] = {}  # running turns, by did
        self._pushes: dict[str, asyncio.Task[None]] = {}  # running push-loop pushes
        self._push_again: set[str] = set()
        self.push_state: dict[str, PushState] = {}  # peers whose pushes are failing
        self._loops: list[asyncio.Task[None]] = []

    # --- rounds ---------------------------------------------------------------------------

    async def sync_all(self, *, force: bool = False) -> dict[str, Any]:
        """One round with every peer: pull then push. A failing peer is retried with
        exponential backoff (``force`` ignores it); errors, and what was accepted and
        refused, are reported per peer. A peer whose turn is running already (the
        background round) is joined, not started twice."""
        fed = self.fed
        await fed.announce()
        if fed.auto_connect:
            await fed._connect_announced()
        report: dict[str, Any] = {}
        turns: dict[str, asyncio.Task[dict[str, Any]]] = {}
        now = now_ms()
        for peer in await fed.list_peers():
            if peer.blocked:
                continue
            if not force and peer.next_try is not None and peer.next_try > now:
                report[peer.did] = {"skipped": "backing off after errors"}
                continue
            turns[peer.did] = self._start_turn(peer, force)
        results = await asyncio.gather(
            *(asyncio.shield(t) for t in turns.values()), return_exceptions=True
        )
        for did, result in zip(turns, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                report[did] = {"error": "stopped: the peer was removed or blocked"}
            elif isinstance(result, BaseException):  # a turn keeps its errors: not expected
                report[did] = {"error": f"{type(result).__name__}: {result}"}
            else:
                report[did] = result
        return report

    def _start_turn(self, peer: Peer, force: bool = False) -> asyncio.Task[dict[str, Any]]:
        task = self._turns.get(peer.did)
        if task is None or task.done():
            task = asyncio.create_task(self._turn(peer, force), name=f"federation-turn {peer.did}")
            self._turns[peer.did] = task
            task.add_done_callback(functools.partial(_forget, self._turns, peer.did))
        return task

    async def _turn(self, peer: Peer, force: bool = False) -> dict[str, Any]:
        """Pull from, then push to, one peer within its budgets. The pull's failure is
        the turn's; the push's is reported apart and backed off on its own."""
        fed, limits = self.fed, self.fed.limits
        tally = RoundTally()
        pushed: dict[str, Any] = {}  # set once the pull is done
        async with self._slots:
            deadline = asyncio.timeout(limits.round_time_s)
            try:
                async with deadline:
                    if not peer.explicit and not fed.auto_connect_private:
                        await refuse_private(peer.url)  # announced, not named: public only
                    await fed.pull(peer, limits, tally)
                    pushed = {"pushed": 0}
                    pushed = await self._push_in_turn(peer, force)
            except TimeoutError:
                if not deadline.expired():
                    raise
                message = (
                    f"{peer.url}: its turn took over {limits.round_time_s:g} s"
                    " (federation.pull_round_time_s)"
                )
                if pushed:  # the pull was done: the push ran out of the turn's time
                    pushed = self._push_failed(peer, message)
            except CivitasError as exc:
                message = exc.message
            except Exception as exc:  # one peer's failure, never the round's
                log.exception("sync with a peer failed", extra={"peer": peer.did})
                message = f"{type(exc).__name__} while syncing: {exc}"[:500]
                if pushed:
                    pushed = self._push_failed(peer, message)
            if pushed:
                await fed._update(peer.did, **_healthy(), **_tallied(tally))
                _log_recovered(peer)
                return {"pulled": tally.accepted, **tally.report(), **pushed}
            await self._failed(peer, message, **_tallied(tally))
            return {"error": message, **tally.report()}

    async def _push_in_turn(self, peer: Peer, force: bool) -> dict[str, Any]:
        """The turn's push, unless pushes to this peer are backing off (``force``: even
        then); what to report of it."""
        state = self.push_state.get(peer.did)
        if state is not None and not force and state.next_try > now_ms():
            return {"pushed": 0, "push_error": state.error}
        try:
            count = await self.fed.push(peer)
        except CivitasError as exc:
            return self._push_failed(peer, exc.message)
        self._push_ok(peer)
        return {"pushed": count}

    def _push_failed(self, peer: Peer, message: str) -> dict[str, Any]:
        """Back off the pushes to ``peer`` (5 s, 10 s … an hour), not its pulls; logged
        when they start failing, then as the backoff grows."""
        previous = self.push_state.get(peer.did)
        failures = (previous.failures if previous else 0) + 1
        next_try = now_ms() + backoff_ms(failures)
        self.push_state[peer.did] = PushState(failures, message, next_try)
        facts = {"peer": peer.did, "url": peer.url, "why": message, "next_try": _iso(next_try)}
        if previous is None:
            log.warning("pushes to a peer failing (its pulls go on)", extra=facts)
        else:
            log.info("pushes to a peer still failing, backing off", extra=facts)
        return {"pushed": 0, "push_error": message}

    def _push_ok(self, peer: Peer) -> None:
        if self.push_state.pop(peer.did, None) is not None:
            log.info("pushes to a peer recovered", extra={"peer": peer.did, "url": peer.url})

    def pushes_due(self, did: str) -> bool:
        """Whether pushes to ``did`` may be tried now (not backing off)."""
        state = self.push_state.get(did)
        return state is None or state.next_try <= now_ms()

    async def _failed(self, peer: Peer, message: str, **values: Any) -> None:
        """Back the peer off, and log the change once: it went down, or (backing off
        further) it is still down, each with the reason and the next try."""
        failures = peer.failures + 1
        now = now_ms()
        next_try = now + backoff_ms(failures)
        facts = {
            "peer": peer.did,
            "url": peer.url,
            "why": message,
            "failures": failures,
            "next_try": _iso(next_try),
        }
        if peer.failures == 0:
            log.warning("peer down", extra=facts)
        else:
            log.info("peer still down, backing off", extra=facts)
        await self.fed._update(
            peer.did,
            last_error=message,
            failures=failures,
            failing_since=peer.failing_since or now,
            next_try=next_try,
            **values,
        )

    def stop_peer(self, did: str) -> None:
        """Cancel whatever this node is doing with ``did`` (removed or blocked)."""
        for task in (self._turns.get(did), self._pushes.get(did)):
            if task is not None and not task.done():
                task.cancel()

    # --- background -------------------------------------------------------------------------

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._pull_loop(), name="federation-pull"),
            asyncio.create_task(self._push_loop(), name="federation-push"),
        ]

    async def stop(self) -> None:
        await stop_tasks([*self._loops, *self._turns.values(), *self._pushes.values()])
        self._loops = []

    async def _pull_loop(self) -> None:
        """Pull repairs whatever push missed: a full round every ``interval_s``."""
        while True:
            try:
                await self.sync_all()
            except Exception:  # the loop must outlive any one bad round
                log.exception("sync round failed")
            await wait_event(self.pull_now, self.fed.interval_s)
            self.pull_now.clear()

    async def _push_loop(self) -> None:
        """News goes out at once, to each peer in its own task."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                for peer in await self.fed.list_peers():
                    if peer.blocked:
                        continue
                    if peer.next_try is not None and peer.next_try > now_ms():
                        continue  # failing: the pull loop retries it, with backoff
                    if not self.pushes_due(peer.did):
                        continue  # pushes refused lately: tried again after their backoff
                    running = self._pushes.get(peer.did)
                    if running is not None and not running.done():
                        self._push_again.add(peer.did)  # once more when it is done
                        continue
                    task = asyncio.create_task(
                        self._push_turn(peer), name=f"federation-push {peer.did}"
                    )
                    self._pushes[peer.did] = task
                    task.add_done_callback(functools.partial(_forget, self._pushes, peer.did))
            except Exception:  # the loop must outlive a failing database call
                log.exception("push round failed")

    async def _push_turn(self, peer: Peer) -> None:
        fed = self.fed
        while True:
            self._push_again.discard(peer.did)
            try:
                async with asyncio.timeout(fed.limits.round_time_s):
                    if not peer.explicit and not fed.auto_connect_private:
                        await refuse_private(peer.url)
                    await fed.push(peer)
            except asyncio.CancelledError:
                raise
            except NotFound:
                return  # removed meanwhile
            except Exception as exc:  # this peer's pushes only: its pulls go on
                if isinstance(exc, CivitasError):
                    message = exc.message
                elif isinstance(exc, TimeoutError):
                    message = f"{peer.url}: a push took over {fed.limits.round_time_s:g} s"
                else:
                    log.exception("push to a peer failed", extra={"peer": peer.did})
                    message = f"{type(exc).__name__} while pushing: {exc}"[:500]
                self._push_failed(peer, message)
                return
            self._push_ok(peer)
            if peer.did not in self._push_again:
                return


def _log_recovered(peer: Peer) -> None:
    if peer.failures:
        down_s = (now_ms() - (peer.failing_since or now_ms())) / 1000
        log.info(
            "peer recovered",
            extra={
                "peer": peer.did,
                "url": peer.url,
                "failures": peer.failures,
                "down_s": round(down_s, 1),
            },
        )


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def _healthy() -> dict[str, Any]:
    return {
        "last_sync": now_ms(),
        "last_error": None,
        "failures": 0,
        "failing_since": None,
        "next_try": None,
    }


def _tallied(tally: RoundTally) -> dict[str, Any]:
    refused = json.dumps(dict(sorted(tally.refused.items())))
    return {"last_accepted": tally.accepted, "last_refused": refused}
