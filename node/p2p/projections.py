"""How record types become tables: body rules and projections, registered per type.

Each package registers, for the record types it owns, a body rule (checked before a
record is appended) and a projection (how a visible record updates that package's
tables). A projection must be a function of the *set* of visible records, never of
their arrival order: rebuilding from the log in any order gives the same tables.
Records of types nobody registered are stored and relayed, but not projected.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from node.p2p.records import Record

BodyRule = Callable[[Mapping[str, Any]], None]
ApplyFn = Callable[[AsyncConnection, Record], Awaitable[None]]
TargetFn = Callable[[Mapping[str, Any]], Any]
RefreshFn = Callable[[AsyncConnection, Sequence[Record]], Awaitable[None]]
ApplyManyFn = Callable[[AsyncConnection, Sequence[Record]], Awaitable[None]]


@dataclass(frozen=True)
class Projection:
    """Tables derived from records of some types."""

    name: str
    record_types: frozenset[str]
    tables: Sequence[sa.Table]
    apply: ApplyFn
    # Rebuilt in order of phase: identities (0) before what attributes records to them (1).
    phase: int = 1
    # Re-derive only what some records (whose state changed) touch; None: a full replay.
    refresh: RefreshFn | None = None
    # Apply a page of new visible records at once, with a bounded number of statements
    # (the same tables as ``apply`` on each in turn); None: ``apply`` record by record.
    apply_many: ApplyManyFn | None = None


@dataclass
class RecordTypes:
    """The registry of known record types: their body rules and projections."""

    rules: dict[str, BodyRule] = field(default_factory=dict)
    projections: list[Projection] = field(default_factory=list)
    # Types whose records act on another record (a revision's root, a tombstone's
    # target): only that record's author may sign them (docs/records.md).
    acts_on: dict[str, TargetFn] = field(default_factory=dict)

    def register_rule(self, record_type: str, rule: BodyRule) -> None:
        if record_type in self.rules:
            raise ValueError(f"record type {record_type!r} already has a body rule")
        self.rules[record_type] = rule

    def register_acts_on(self, record_type: str, target_of: TargetFn) -> None:
        """Records of ``record_type`` revise or withdraw the record ``target_of(body)``
        names (None: this one acts on nothing); the log refuses them from anyone but the
        target's author (or that author's rotated key)."""
        self.acts_on[record_type] = target_of

    def target_of(self, record: Record) -> bytes | None:
        """The record ``record`` revises or withdraws, if its type acts on one."""
        target_of = self.acts_on.get(record.type)
        target = target_of(record.body) if target_of is not None else None
        return target if isinstance(target, bytes) else None

    def register_projection(self, projection: Projection) -> None:
        self.projections.append(projection)

    def check_body(self, record: Record) -> None:
        rule = self.rules.get(record.type)
        if rule is not None:
            rule(record.body)

    def projections_for(self, record_type: str) -> Iterable[Projection]:
        return (p for p in self.projections if record_type in p.record_types)

    async def project(self, conn: AsyncConnection, record: Record) -> None:
        for projection in self.projections_for(record.type):
            await projection.apply(conn, record)

    async def project_many(self, conn: AsyncConnection, batch: Sequence[Record]) -> None:
        """Project a page of new visible records: phase by phase (identities first), each
        projection given all of its records at once where it has ``apply_many``.

        Projections depend only on the set of visible records, so the tables end as
        projecting the records one by one (in any order) leaves them.
        """
        for phase in sorted({p.phase for p in self.projections}):
            for projection in self.projections:
                if projection.phase != phase:
                    continue
                mine = [r for r in batch if r.type in projection.record_types]
                if not mine:
                    continue
                if projection.apply_many is not None:
                    await projection.apply_many(conn, mine)
                else:
                    for record in mine:
                        await projection.apply(conn, record)

    @property
    def projected_types(self) -> frozenset[str]:
        return frozenset().union(*(p.record_types for p in self.projections))
