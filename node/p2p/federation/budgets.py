"""What one peer may cost this node: pull budgets per round and per minute.

Pushes into our inbox already had a budget (``max_pushed_per_minute``); pulls get the
same treatment (DESIGN.md section 8, "Budgets for peers"). A peer's turn in a round ends
when its round budget (pages, records, seconds) or its per-minute budget is spent; that
is no fault of the peer, and the next round carries on from the cursor. A peer that
breaks the protocol (no progress, epoch flapping, more entries than asked for) is
*misbehaving*: its turn ends with :class:`PeerMisbehaved`, which backs it off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from node.config import FederationSection
from node.p2p.outgoing import PeerError

UNKNOWN_OVER_BUDGET = "unknown_type_over_budget"


class PeerMisbehaved(PeerError):
    """The peer broke the pull protocol; the message says what it did."""

    code = "peer_misbehaved"


@dataclass(frozen=True)
class PullLimits:
    """The budgets of one peer's pull (``[federation]`` settings, README)."""

    pages_per_round: int = 100
    records_per_round: int = 20_000
    pages_per_minute: int = 300
    records_per_minute: int = 60_000
    unknown_types_per_minute: int = 200
    request_timeout_s: float = 30.0
    round_time_s: float = 120.0
    concurrency: int = 8

    @classmethod
    def of(cls, section: FederationSection) -> PullLimits:
        return cls(
            pages_per_round=section.pull_pages_per_round,
            records_per_round=section.pull_records_per_round,
            pages_per_minute=section.pull_pages_per_minute,
            records_per_minute=section.pull_records_per_minute,
            unknown_types_per_minute=section.unknown_types_per_minute,
            request_timeout_s=section.pull_request_timeout_s,
            round_time_s=section.pull_round_time_s,
            concurrency=section.pull_concurrency,
        )


UNLIMITED = PullLimits(
    pages_per_round=2**62,
    records_per_round=2**62,
    pages_per_minute=2**62,
    records_per_minute=2**62,
)


@dataclass
class TokenBucket:
    """``per_minute`` tokens a minute, at most ``per_minute`` saved up."""

    per_minute: float
    tokens: float = -1.0
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.per_minute

    def available(self) -> int:
        now = time.monotonic()
        self.tokens = min(
            self.per_minute, self.tokens + (now - self.stamp) * self.per_minute / 60.0
        )
        self.stamp = now
        return int(self.tokens)

    def take(self, count: int = 1) -> bool:
        if self.available() < count:
            return False
        self.tokens -= count
        return True


@dataclass
class PeerBudget:
    """One peer's per-minute buckets (kept across rounds, in this process)."""

    pages: TokenBucket
    records: TokenBucket
    unknown: TokenBucket

    @classmethod
    def of(cls, limits: PullLimits) -> PeerBudget:
        return cls(
            TokenBucket(limits.pages_per_minute),
            TokenBucket(limits.records_per_minute),
            TokenBucket(limits.unknown_types_per_minute),
        )


@dataclass
class RoundTally:
    """What one peer's turn did: pages read, records new and refused (by reason)."""

    pages: int = 0
    records: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # why the turn ended before the peer's log did

    def refuse(self, codes: list[str]) -> None:
        for code in codes:
            self.refused[code] = self.refused.get(code, 0) + 1

    def report(self) -> dict[str, object]:
        out: dict[str, object] = {
            "accepted": self.accepted,
            "refused": dict(sorted(self.refused.items())),
            "pages": self.pages,
        }
        if self.stopped:
            out["budget"] = self.stopped
        return out
