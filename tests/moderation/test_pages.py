"""Moderation pages over HTTP, on both databases: the notice form, a notice's status,
the queue and the decide buttons, as a browser without JavaScript would use them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from node.app import Node
from node.render import CSP
from tests.catalog.conftest import PASSWORD, lora_file

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
FILE_TARGET = "file:" + "ab" * 32


def token_in(html: str) -> str:
    found = TOKEN.search(html)
    assert found, "the page has no form token"
    return found.group(1)


async def page(client: TestClient, path: str, status: int = 200) -> str:
    resp = await client.get(path, allow_redirects=False)
    html = await resp.text()
    assert resp.status == status, html
    assert resp.headers["Content-Security-Policy"] == CSP
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert " style=" not in html, "inline style"
    return html


async def log_in(client: TestClient, user: str) -> str:
    """Log in through the form (as `user` alone); return the session's CSRF token."""
    client.session.cookie_jar.clear()
    token = token_in(await (await client.get("/login")).text())
    resp = await client.post(
        "/login",
        data={"csrf_token": token, "username": user, "password": PASSWORD, "next": "/"},
        allow_redirects=False,
    )
    assert resp.status == 303
    return token_in(await page(client, "/takedowns/new"))


def notice_form(token: str, **changes: str) -> dict[str, str]:
    form = {
        "csrf_token": token,
        "claimant_name": "Alice Painter",
        "contact": "alice@example.org",
        "works": "My watercolor fox series, 2019-2023",
        "targets": FILE_TARGET,
        "reason": "copyright",
        "action": "remove",
        "names": "",
        "proof_urls": "",
        "statement": "These are my paintings.",
        "good_faith": "1",
        "accurate": "1",
    }
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


async def file_notice(client: TestClient, token: str, **changes: Any) -> str:
    resp = await client.post(
        "/takedowns/new", data=notice_form(token, **changes), allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    location = resp.headers["Location"]
    assert re.fullmatch(r"/takedowns/[0-9a-f]{64}", location)
    return location


async def test_notice_form_from_a_model_page(
    client: TestClient, node: Node, tmp_path: Path
) -> None:
    resp = await client.get("/takedowns/new?target=" + FILE_TARGET, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/login?next=")
    alice = await node.accounts.add_user("alice", PASSWORD)
    published = await node.catalog.publish_path(
        alice.did, lora_file(tmp_path / "fox.safetensors", 1), {"name": "Watercolor Fox"}
    )
    model, root = published["model"], published["model"]["civitas"]["rootId"]
    report = f"/takedowns/new?target=model:{root}"
    assert f'href="{report}"' in await page(client, f"/models/{model['id']}")

    token = await log_in(client, "alice")
    html = await page(client, report)
    assert f"model:{root}</textarea>" in html and 'name="good_faith"' in html

    # Invalid: the form comes back with what was wrong and what was entered.
    form = notice_form(token, targets=f"model:{root}", accurate="")
    resp = await client.post("/takedowns/new", data=form)
    html = await resp.text()
    assert resp.status == 400 and 'role="alert"' in html and "accurate" in html
    assert 'value="Alice Painter"' in html and f"model:{root}</textarea>" in html
    assert "My watercolor fox series" in html and 'value="copyright" selected' in html
    resp = await client.post("/takedowns/new", data=notice_form(token, targets="model:12"))
    assert resp.status == 400 and "64 hexadecimal" in await resp.text()
    resp = await client.post("/takedowns/new", data=notice_form("forged"))
    assert resp.status == 403

    location = await file_notice(client, token, targets=f"model:{root}")
    html = await page(client, location)
    assert f'href="/models/{model["id"]}">Watercolor Fox</a>' in html
    assert "Alice Painter" in html and "pending" in html and "No decision yet" in html


async def test_moderator_decides_from_the_queue(client: TestClient, node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    await node.accounts.add_user("mod", PASSWORD, "moderator")
    token = await log_in(client, "alice")
    location = await file_notice(client, token)
    notice_id = location.rsplit("/", 1)[1]
    html = await page(client, location)
    print(html[html.find("<main") :])
    assert "My watercolor fox series" in html and "AB" * 32 in html
    assert "alice@example.org" not in html and "Honor all targets" not in html
    assert "Your notice was filed" in html  # the flash after the redirect
    await page(client, "/moderation", 403)
    await page(client, "/moderation/audit", 403)
    resp = await client.post(
        f"/takedowns/{notice_id}/decide", data={"csrf_token": token, "verdict": "honor"}
    )
    assert resp.status == 403

    token = await log_in(client, "mod")
    html = await page(client, "/moderation")
    assert f'href="/takedowns/{notice_id}"' in html and "takedown notice to decide" in html
    html = await page(client, location)
    assert "alice@example.org" in html and "Honor all targets" in html
    resp = await client.post(
        f"/takedowns/{notice_id}/decide",
        data={"csrf_token": token, "verdict": "honor", "note": "her series, checked"},
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == location
    html = await page(client, location)
    assert '<strong class="verdict">Honor</strong> by mod' in html
    assert "her series, checked" in html and "applied" in html
    assert notice_id not in await page(client, "/moderation")
    assert notice_id in await page(client, "/moderation?status=closed")
    audit = await page(client, "/moderation/audit")
    assert "notice filed" in audit and f'href="/takedowns/{notice_id}"' in audit

    # Only a creator of what the notice names may answer it (the claimant is not one).
    token = await log_in(client, "alice")
    resp = await client.post(
        f"/takedowns/{notice_id}/counter", data={"csrf_token": token, "statement": ""}
    )
    assert resp.status == 400 and "statement" in await resp.text()
    resp = await client.post(
        f"/takedowns/{notice_id}/counter",
        data={"csrf_token": token, "statement": "I drew these myself."},
        allow_redirects=False,
    )
    assert resp.status == 403 and "only the creator" in await resp.text()
    await page(client, "/takedowns/" + "0" * 64, 404)
