"""The admin's federation page over HTTP, as a browser without JavaScript uses it: peers
(against a second live node), blocked authors, takedown-list subscriptions, and who may."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from node.app import Node
from node.p2p.keys import SigningKey
from tests.catalog.conftest import PASSWORD
from tests.moderation.conftest import start_node
from tests.moderation.test_pages import page, token_in
from tests.p2p.test_torrents import LiveNode

HOME = "/admin/federation"
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.fixture
async def other(tmp_path: Path) -> AsyncIterator[LiveNode]:
    """A second live node (SQLite, no BitTorrent) that has announced itself."""
    async for live in start_node(tmp_path / "other", torrent=False):
        await live.node.log.ensure_epoch()
        await live.node.federation.announce()
        yield live


async def log_in(client: TestClient, node: Node, name: str, role: str) -> str:
    """A user with ``role``, logged in through the form; the session's CSRF token."""
    await node.accounts.add_user(name, PASSWORD, role)
    client.session.cookie_jar.clear()
    token = token_in(await (await client.get("/login")).text())
    resp = await client.post(
        "/login",
        data={"csrf_token": token, "username": name, "password": PASSWORD, "next": "/"},
        allow_redirects=False,
    )
    assert resp.status == 303
    return token_in(await (await client.get("/")).text())


async def act(client: TestClient, path: str, token: str, flash: str, **fields: str) -> str:
    """Post a form of the page; it comes back to the page, which flashes ``flash``."""
    resp = await client.post(
        HOME + path, data={"csrf_token": token, **fields}, allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == HOME
    shown = html.unescape(await page(client, HOME))
    assert flash in shown, shown[shown.find('class="flash"') :][:600]
    assert 'class="flash"' not in await page(client, HOME), "a flash is shown once"
    return shown


async def test_only_admins(client: TestClient, node: Node) -> None:
    resp = await client.get(HOME, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login?next=")

    token = await log_in(client, node, "bob", "member")
    assert 'href="/admin/federation"' not in await page(client, "/")
    assert "only an administrator" in await page(client, HOME, 403)
    resp = await client.post(HOME + "/sync", data={"csrf_token": token})
    assert resp.status == 403

    token = await log_in(client, node, "root", "admin")
    shown = await page(client, HOME)
    assert 'href="/admin/federation"' in shown and node.node_key.did in shown
    assert "No peers yet" in shown and "No author is blocked" in shown
    assert "No subscriptions" in shown and 'action="/admin/federation/peers"' in shown
    # A post without the session's token (or with another) is refused, and changes nothing.
    for form in ({}, {"csrf_token": "forged"}):
        resp = await client.post(HOME + "/authors/block", data={**form, "did": "x"})
        assert resp.status == 403 and "expired" in await resp.text()
    await act(client, "/sync", token, "Nothing to sync")


async def test_peers_and_subscriptions(client: TestClient, node: Node, other: LiveNode) -> None:
    token = await log_in(client, node, "root", "admin")
    other_did = other.node.node_key.did

    # Bad input: a clear message, never a 500.
    await act(client, "/peers", token, "The peer was not added: cannot reach", url=UNREACHABLE)
    await act(client, "/peers", token, "starts with http:// or https://", url="node.example")
    await act(client, "/peers", token, "enter the peer's URL", url=" ")

    shown = await act(client, "/peers", token, f"Added test-node ({other_did})", url=other.url)
    assert other.url in shown and other_did in shown
    await act(client, "/peers", token, "is a peer already", url=other.url)
    await other.node.federation.add_peer(str(client.make_url("")).rstrip("/"))  # both ways
    shown = await act(client, "/sync", token, "Synced 1 of 1 peer: ")
    assert "connected" in shown and "Add as peer" not in shown  # heard of, and a peer

    quoted = other_did.replace(":", "%3A")
    shown = await act(client, f"/peers/{quoted}/block", token, "Blocked test-node")
    assert ">blocked</span>" in shown and f"/peers/{quoted}/unblock" in shown
    assert (await node.federation.peer(other_did)).blocked
    shown = await act(client, f"/peers/{other_did}/unblock", token, "Unblocked test-node")
    assert f"/peers/{quoted}/block" in shown
    shown = await act(client, f"/peers/{other_did}/remove", token, f"Removed the peer {other_did}")
    assert "No peers yet" in shown and "Add as peer" in shown  # still heard of
    await act(client, f"/peers/{other_did}/remove", token, "is not a peer of this node")
    # "Add as peer" posts the announced URL with the did it must have.
    await act(client, "/peers", token, "Added test-node", url=other.url, did=other_did)
    assert [p.did for p in await node.federation.list_peers()] == [other_did]

    # Takedown lists: by URL (read at once) or by did, auto or review.
    shown = await act(
        client,
        "/subscriptions",
        token,
        f"Subscribed to the takedown list of {other_did} (auto)",
        node=other.url,
        policy="auto",
    )
    assert f"{HOME}/subscriptions/{quoted}/remove" in shown and other.url in shown
    lone = SigningKey.generate().did
    await act(client, "/subscriptions", token, f"{lone} (review)", node=lone, policy="review")
    await act(client, "/subscriptions", token, "neither a node URL nor a did:key", node="nope")
    await act(
        client, "/subscriptions", token, "does not look like a Civitas node", node=UNREACHABLE
    )
    await act(client, "/subscriptions", token, "policy must be one of", node=lone, policy="x")
    subs = await node.moderation.list_subscriptions()
    assert {(s["did"], s["policy"]) for s in subs} == {(other_did, "auto"), (lone, "review")}
    await act(
        client,
        f"/subscriptions/{lone}/remove",
        token,
        f"Unsubscribed from the takedown list of {lone}",
    )
    await act(client, f"/subscriptions/{lone}/remove", token, f"not subscribed to {lone}")
    assert [s["did"] for s in await node.moderation.list_subscriptions()] == [other_did]


async def test_blocked_authors(client: TestClient, node: Node) -> None:
    token = await log_in(client, node, "root", "admin")
    author = SigningKey.generate().did
    shown = await act(
        client,
        "/authors/block",
        token,
        f"Blocked the author {author}: 0 records hidden",
        did=author,
        reason="spam, again",
    )
    assert author in shown and "spam, again" in shown
    assert f"{HOME}/authors/{author.replace(':', '%3A')}/unblock" in shown
    assert [a["did"] for a in await node.log.list_blocked()] == [author]
    await act(client, "/authors/block", token, "The author was not blocked: ", did="did:key:nope")
    await act(client, "/authors/block", token, "enter the author's did:key", did="")
    shown = await act(
        client, f"/authors/{author}/unblock", token, f"Unblocked the author {author}: 0 records"
    )
    assert "No author is blocked" in shown
    await act(client, f"/authors/{author}/unblock", token, f"{author} is not blocked")
    await act(
        client, "/authors/unfreeze", token, "has no conflicting rotations", did=author, keep=author
    )
