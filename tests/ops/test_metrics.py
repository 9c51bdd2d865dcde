"""``GET /metrics``: Prometheus text, read back with prometheus_client's own parser."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from node.app import Node, create_app
from tests.catalog.conftest import PASSWORD, lora_file
from tests.p2p.test_torrents import LiveNode, start_node, wait_for

Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    for found, number in samples.get(name, []):
        if all(found.get(k) == v for k, v in labels.items()):
            return number
    return None


async def scrape(client: TestClient, headers: dict[str, str]) -> Samples:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/plain"
    return parse(await resp.text())


async def test_metrics_need_the_admin_token(
    client: TestClient, admin_headers: dict[str, str], node: Node
) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"
    await node.accounts.add_user("bob", PASSWORD)
    login = await client.post("/api/auth/login", json={"username": "bob", "password": PASSWORD})
    assert login.status == 200
    assert (await client.get("/metrics")).status == 403  # a member is not an admin
    samples = await scrape(client, admin_headers)
    assert value(samples, "civitas_records", type="profile", state="visible") == 1  # bob
    assert value(samples, "civitas_compute_queue_depth") == 0
    assert value(samples, "civitas_peers", status="ok") == 0


async def test_metrics_may_be_public(node: Node) -> None:
    node.config.metrics.public = True
    async with TestClient(TestServer(create_app(node, "x" * 40), host="127.0.0.1")) as client:
        assert (await client.get("/metrics")).status == 200


@pytest.fixture
async def peered(tmp_path: Path) -> AsyncIterator[tuple[LiveNode, LiveNode]]:
    async for a in start_node(tmp_path / "a"):
        async for b in start_node(tmp_path / "b", enabled=False):
            for one, other in ((a, b), (b, a)):
                resp = await one.client.post(
                    "/api/admin/peers", json={"url": other.url}, headers=one.admin
                )
                assert resp.status == 201, await resp.text()
            yield a, b


async def test_a_scrape_reports_log_peers_torrents_and_requests(
    peered: tuple[LiveNode, LiveNode], tmp_path: Path
) -> None:
    a, b = peered
    alice = await a.node.accounts.add_user("alice", PASSWORD)
    result = await a.node.catalog.publish_path(
        alice.did, lora_file(tmp_path / "fox.safetensors"), {"name": "Fox"}
    )
    model_id = result["model"]["id"]
    assert (await a.client.get(f"/api/v1/models/{model_id}")).status == 200
    assert (await a.client.get("/api/v1/models/12345")).status == 404
    assert (await a.client.get("/no/such/page/98765")).status == 404
    assert (await a.client.get("/api/v1/models")).status == 200

    async def seeding() -> Any:
        samples = await scrape(a.client, a.admin)
        return samples if value(samples, "civitas_torrents", state="seeding") == 1 else None

    samples: Samples = await wait_for(seeding, "the published file seeding in the metrics")
    assert value(samples, "civitas_records", type="model", state="visible") == 1
    assert value(samples, "civitas_records", type="model_version", state="visible") == 1
    assert value(samples, "civitas_peers", status="ok") == 1
    b_did = b.node.node_key.did
    assert value(samples, "civitas_peer_records_behind", peer=b_did) is not None
    assert value(samples, "civitas_peer_sync_lag_seconds", peer=b_did) is not None
    assert value(samples, "civitas_peer_failed_rounds", peer=b_did) == 0
    assert value(samples, "civitas_torrents", state="downloading") == 0
    assert value(samples, "civitas_swarm_peers") is not None
    assert value(samples, "civitas_torrent_payload_bytes", direction="up") is not None
    assert value(samples, "civitas_compute_workers", status="registered") == 0
    assert value(samples, "civitas_takedown_decisions", outcome="applied") is None
    assert value(samples, "civitas_takedown_records_hidden") == 0

    requests = "civitas_http_requests_total"
    one = "/api/v1/models/{id}"
    assert value(samples, requests, route=one, method="GET", status="200") == 1
    assert value(samples, requests, route=one, method="GET", status="404") == 1
    assert value(samples, requests, route="(unmatched)", status="404") == 1
    routes = {labels["route"] for labels, _ in samples[requests]}
    assert not any(r.endswith(("12345", "98765")) for r in routes), routes  # bounded labels
    latency = "civitas_http_request_duration_seconds"
    assert value(samples, f"{latency}_count", route=one, method="GET") == 2
    assert value(samples, f"{latency}_bucket", route=one, method="GET", le="+Inf") == 2
    db_time = value(samples, "civitas_http_request_db_seconds_sum", route="/api/v1/models")
    assert db_time is not None and db_time > 0  # the search read the database

    # B has A's records now or soon: its lag for A is read from the same gauges.
    b_samples = await scrape(b.client, b.admin)
    assert value(b_samples, "civitas_peer_records_behind", peer=a.node.node_key.did) is not None
