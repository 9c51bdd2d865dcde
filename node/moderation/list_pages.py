"""The rules a subscribed node's takedown-list page must follow, checked page by page.

A list is read from a cursor, ``MAX_LIST_PAGES`` pages at most per read (the rest next
poll). Each page must make progress: its entries' seqs rise strictly from the cursor,
and a page with no entries is the last (``next`` with nothing listed is no progress).
An entry carries the subscribed node's ``takedown_decision`` and, optionally, the
``takedown_notice`` that decision names: nothing else is taken from a list, so a list
cannot carry other records past the budgets peers' records are held to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.errors import RecordError
from node.moderation import schemas
from node.p2p.outgoing import PeerError
from node.p2p.records import Record, verify_record

MAX_LIST_PAGES = 20  # pages of one list read per poll
MAX_LIST_SEQ = 2**62  # the largest cursor a list may give


@dataclass
class ListPage:
    """The records a page gave, where the cursor is after it, and what was left out."""

    records: list[Record]
    cursor: int
    more: bool
    skipped: list[str] = field(default_factory=list)


def read_list_page(page: Any, did: str, url: str, cursor: int) -> ListPage:
    """Check one page of ``did``'s list (asked from ``cursor``); PeerError if it breaks
    the rules. A notice that is not the one its decision names is left out, its reason
    in ``skipped``; the decision is kept."""
    if not isinstance(page, dict) or page.get("node") != did:
        who = page.get("node") if isinstance(page, dict) else None
        raise PeerError(f"{url} now serves the list of {who}")
    entries = page.get("entries")
    if not isinstance(entries, list):
        raise PeerError(f"{url} sent a list page without entries")
    out = ListPage([], cursor, page.get("next") is not None)
    for entry in entries:
        if not isinstance(entry, dict):
            raise PeerError(f"{url} sent a list entry that is not an object")
        seq = entry.get("seq")
        if not isinstance(seq, int) or not out.cursor < seq <= MAX_LIST_SEQ:
            raise PeerError(
                f"{url} listed seq {seq!r} after {out.cursor}: no progress (the cursor must"
                " advance)"
            )
        decision = _record(entry.get("decision"), url)
        if decision.author != did or decision.type != schemas.DECISION:
            raise PeerError(f"{url} listed a record not signed by {did}")
        if entry.get("notice"):
            notice = _record(entry["notice"], url)
            if notice.type != schemas.NOTICE or notice.id != decision.body.get("notice"):
                out.skipped.append(
                    f"{url} listed a {notice.type} record at seq {seq} that is not the"
                    f" {schemas.NOTICE} its decision names: left out"
                )
            else:
                out.records.append(notice)
        out.records.append(decision)
        out.cursor = seq
    if out.more and not entries:
        raise PeerError(f"{url} answered an empty list page with more to come: no progress")
    return out


def _record(text: Any, url: str) -> Record:
    try:
        return verify_record(bytes.fromhex(text))
    except (TypeError, ValueError):
        raise PeerError(f"{url} listed a record that is not hex") from None
    except RecordError as exc:
        raise PeerError(f"{url} listed a bad record: {exc.message}") from None
