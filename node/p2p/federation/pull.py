"""The rules a peer's record pages must follow, checked page by page during a pull.

Each page must make progress: its entries' seqs rise strictly and start after the
cursor we asked from, there are no more of them than we asked for, and an empty page
says it is the last. A peer's log epoch may change once in a turn (it was restored from
a backup: read it again from the start); a second change in the same turn is epoch
flapping. Any break is :class:`PeerMisbehaved`, whose message names what the peer did.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import BadRequest
from node.p2p.federation import wire
from node.p2p.federation.budgets import PeerMisbehaved
from node.p2p.records import MAX_RECORD_BYTES

PAGE = 200
MAX_SEQ = 2**62  # as the records endpoint takes ``after``
# A full page of the largest records, with room for the envelope of each entry.
MAX_PAGE_BYTES = PAGE * (MAX_RECORD_BYTES + 256) + 64 * 1024


def decode(body: bytes, after: int) -> wire.Page:
    try:
        return wire.decode_page(body)
    except BadRequest as exc:
        why = exc.message.rstrip(": ")
        raise PeerMisbehaved(f"sent a bad records page (after={after}): {why}") from None


@dataclass
class PullCursor:
    """Where a turn is in the peer's log, and what epoch that position belongs to."""

    cursor: int
    epoch: str | None
    pages: int = 0
    restarted: bool = False

    def follow(self, page: wire.Page, after: int, limit: int) -> bool:
        """Check ``page`` (asked as ``after``, ``limit``); False: the epoch changed and
        the cursor went back to 0 (read again, ignoring this page)."""
        self.pages += 1
        if page.epoch != self.epoch:
            if self.pages > 1 or (self.epoch is not None and after != 0):
                if self.restarted:
                    raise PeerMisbehaved(
                        f"changed its log epoch again in one round ({self.epoch!r} to"
                        f" {page.epoch!r}): epoch flapping"
                    )
                self.restarted = True
                self.cursor, self.epoch = 0, page.epoch
                return False
            self.epoch = page.epoch
        entries = page.entries
        if len(entries) > limit:
            raise PeerMisbehaved(f"sent {len(entries)} entries when asked for at most {limit}")
        if not entries:
            if page.more:
                raise PeerMisbehaved(
                    f"answered an empty page with more: true (after={after}): no progress"
                )
            return True
        previous = after
        for entry in entries:
            if entry.seq <= previous:
                what = "at or before the cursor" if previous == after else "out of order"
                raise PeerMisbehaved(
                    f"sent seq {entry.seq} {what} (after={after}): the cursor must advance"
                )
            previous = entry.seq
        if previous > MAX_SEQ:
            raise PeerMisbehaved(f"sent seq {previous}, past the largest cursor {MAX_SEQ}")
        self.cursor = previous
        return True
