"""Whatever a peer or a client puts in a query string or a push, the answer is a 4xx JSON
error or a per-record refusal, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.app import Node
from node.http import parse_int
from node.p2p.federation import wire
from node.p2p.federation.signing import sign_request
from node.p2p.keys import SigningKey
from node.p2p.records import now_ms, sign_record
from node.p2p.tables import peers

BAD_INTS = ["-1", "abc", "1e3", " 5", "1_000", "٣", str(2**63), str(10**30), "9" * 5000]


@pytest.mark.parametrize(
    ("raw", "value"),
    [("0", 0), ("42", 42), (str(2**62), 2**62), ("-0", 0)] + [(bad, None) for bad in BAD_INTS],
)
def test_parse_int_takes_only_ascii_digits_within_bounds(raw: str, value: int | None) -> None:
    assert parse_int(raw) == value


async def _assert_4xx(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    answer: dict[str, Any] = await resp.json()
    assert set(answer) == {"error", "message"}
    return answer


@pytest.mark.parametrize("bad", BAD_INTS)
async def test_crafted_cursors_are_refused_with_400(
    client: TestClient, admin_headers: dict[str, str], bad: str
) -> None:
    for path in (
        "/federation/v1/records?after=",
        "/federation/v1/records?limit=",
        "/moderation/v1/takedowns?after=",
        "/moderation/v1/takedowns?limit=",
    ):
        answer = await _assert_4xx(await client.get(path + bad), 400)
        assert path.rsplit("?", 1)[1].rstrip("=") in answer["message"]
    await _assert_4xx(
        await client.get("/api/moderation/audit?before=" + bad, headers=admin_headers), 400
    )
    assert (await client.get(f"/federation/v1/records?after={2**62}")).status == 200
    assert (await client.get("/moderation/v1/takedowns?after=0&limit=500")).status == 200


@pytest.mark.parametrize("bad", ["-1", str(2**63), str(10**30), "x"])
async def test_crafted_ids_in_moderation_paths_are_404(
    client: TestClient, admin_headers: dict[str, str], bad: str
) -> None:
    for method, path in (
        ("POST", f"/api/moderation/queue/{bad}/close"),
        ("POST", f"/api/moderation/models/{bad}/rating"),
        ("POST", f"/api/moderation/images/{bad}/rating"),
    ):
        resp = await client.request(method, path, json={}, headers=admin_headers)
        await _assert_4xx(resp, 404)


async def test_a_push_whose_record_cannot_be_stored_is_refused_per_record(
    node: Node, client: TestClient
) -> None:
    """A NUL in a text field: PostgreSQL cannot store it in a text column. The push is
    answered with a refusal for that record, and the good one beside it is kept."""
    sender = SigningKey.from_seed(b"q" * 32)
    async with node.db.write() as conn:
        await conn.execute(
            peers.insert().values(did=sender.did, url="http://127.0.0.1:9", added=now_ms())
        )
    author = SigningKey.from_seed(b"u" * 32)
    poison = sign_record(author, "profile", {"name": "nul", "bio": "a\x00b"})
    good = sign_record(SigningKey.from_seed(b"v" * 32), "profile", {"name": "good"})
    body = wire.encode_batch([poison.raw, good.raw])
    headers = sign_request(sender, "POST", "/federation/v1/inbox", body, node.node_key.did)
    resp = await client.post("/federation/v1/inbox", data=body, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["accepted"] >= 1  # SQLite stores the NUL; PostgreSQL cannot
    assert await node.log.get(good.id) is not None
