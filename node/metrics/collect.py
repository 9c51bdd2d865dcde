"""What a scrape reports besides HTTP: the log, peers, torrents, compute, takedowns."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from node.db import Database
from node.metrics.http import HttpMetrics, time_statements
from node.metrics.store import read_counts
from node.p2p.federation.service import Federation
from node.p2p.torrents import TorrentEngine


def _gauge(registry: CollectorRegistry, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
    return Gauge(name, doc, tuple(labels), registry=registry)


class NodeMetrics:
    """One application's metrics: its registry, the HTTP middleware, and scrape-time gauges."""

    def __init__(self, db: Database, federation: Federation, engine: TorrentEngine | None) -> None:
        self.db = db
        self.federation = federation
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        self.http = HttpMetrics(self.registry)
        time_statements(db.engine)
        r = self.registry
        self.records = _gauge(
            r, "civitas_records", "Records in the log, by type and state.", ("type", "state")
        )
        self.peers = _gauge(r, "civitas_peers", "Federation peers, by status.", ("status",))
        self.behind = _gauge(
            r,
            "civitas_peer_records_behind",
            "Records a peer has that this node has not pulled yet (its last known high-water "
            "mark minus our cursor).",
            ("peer",),
        )
        self.lag = _gauge(
            r,
            "civitas_peer_sync_lag_seconds",
            "Seconds since this node last synced with a peer successfully (-1: never).",
            ("peer",),
        )
        self.failures = _gauge(
            r,
            "civitas_peer_failed_rounds",
            "Sync rounds with a peer that failed in a row (0: the last one worked).",
            ("peer",),
        )
        self.failing = _gauge(
            r,
            "civitas_peers_failing",
            "Peers whose last sync round failed, by kind of error (push or pull).",
            ("kind",),
        )
        self.refused = _gauge(
            r,
            "civitas_peer_records_refused",
            "Records a peer sent in its last round that were refused, by reason.",
            ("peer", "reason"),
        )
        self.torrents = _gauge(
            r, "civitas_torrents", "Torrents in the BitTorrent session, by state.", ("state",)
        )
        self.swarm_peers = _gauge(
            r, "civitas_swarm_peers", "BitTorrent peers connected, over all torrents."
        )
        self.payload = _gauge(
            r,
            "civitas_torrent_payload_bytes",
            "Payload bytes moved by the torrents in the session (all time), by direction.",
            ("direction",),
        )
        self.downloads = _gauge(
            r, "civitas_downloads", "Fetches (downloads) this node knows, by state.", ("state",)
        )
        self.jobs = _gauge(
            r, "civitas_compute_jobs", "Compute jobs, by kind and state.", ("kind", "state")
        )
        self.queue_depth = _gauge(
            r, "civitas_compute_queue_depth", "Compute jobs waiting for a worker (queued)."
        )
        self.workers = _gauge(
            r,
            "civitas_compute_workers",
            "Registered compute workers; active: seen in the last five minutes.",
            ("status",),
        )
        self.decisions = _gauge(
            r,
            "civitas_takedown_decisions",
            "Takedown decisions this node received, by outcome (applied: honored here).",
            ("outcome",),
        )
        self.enforced = _gauge(
            r, "civitas_takedown_records_hidden", "Records hidden or purged by applied takedowns."
        )

    @property
    def middleware(self) -> Any:
        return self.http.middleware

    async def scrape(self) -> bytes:
        """Read the node's state into the gauges; the registry in the text format."""
        now = time.time()
        counts = await read_counts(self.db, int(now * 1000))
        self._set(self.records, {k: v for k, v in counts.records.items()})
        self._set(self.jobs, counts.jobs)
        self.queue_depth.set(sum(n for (_, state), n in counts.jobs.items() if state == "queued"))
        self._set(self.workers, {"registered": counts.workers, "active": counts.workers_active})
        self._set(self.decisions, counts.decisions)
        self.enforced.set(counts.enforced_records)
        self._set(self.downloads, counts.downloads)
        await self._peers(now)
        self._torrents()
        return generate_latest(self.registry)

    async def _peers(self, now: float) -> None:
        listed = await self.federation.list_peers()
        for gauge in (self.behind, self.lag, self.failures, self.refused):
            gauge.clear()
        status: dict[str, int] = {"ok": 0, "failing": 0, "blocked": 0}
        failing: dict[str, int] = {"pull": 0, "push": 0}
        for peer in listed:
            kind = "blocked" if peer.blocked else "failing" if peer.failures else "ok"
            status[kind] += 1
            if peer.failures and not peer.blocked:
                error = (peer.last_error or "").lower()
                failing["push" if "push" in error else "pull"] += 1
            self.behind.labels(peer.did).set(max(0, peer.their_high - peer.cursor))
            self.lag.labels(peer.did).set(now - peer.last_sync / 1000 if peer.last_sync else -1)
            self.failures.labels(peer.did).set(peer.failures)
            for reason, n in peer.last_refused.items():
                self.refused.labels(peer.did, reason).set(n)
        self._set(self.peers, status)
        self._set(self.failing, failing)

    def _torrents(self) -> None:
        states: dict[str, int] = {}
        connected = uploaded = downloaded = 0
        engine = self.engine
        if engine is not None and engine.session is not None:
            for handle in list(engine.handles.values()):
                s = handle.status()
                state = "seeding" if s.is_seeding else "paused" if s.paused else "downloading"
                states[state] = states.get(state, 0) + 1
                connected += int(s.num_peers)
                uploaded += int(s.all_time_upload)
                downloaded += int(s.all_time_download)
        for state in ("seeding", "downloading", "paused"):
            states.setdefault(state, 0)
        self._set(self.torrents, states)
        self.swarm_peers.set(connected)
        self._set(self.payload, {"up": uploaded, "down": downloaded})

    @staticmethod
    def _set(gauge: Gauge, values: dict[Any, int]) -> None:
        gauge.clear()
        for labels, value in values.items():
            gauge.labels(*(labels if isinstance(labels, tuple) else (labels,))).set(value)
