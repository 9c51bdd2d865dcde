"""``next=`` after logging in never leaves the site, however the browser would read it."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from node.app import Node
from node.http import local_path

PASSWORD = "correct horse battery"

# Each would send a browser to another site if passed through as a Location.
OFFSITE = [
    "//evil.com",
    "/%09/evil.com",  # harmless as sent: it stays encoded (checked separately below)
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r\n/evil.com",
    "\t//evil.com",
    " //evil.com",
    "\x00//evil.com",
    "\x1f/\t/evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "\\/evil.com",
    "/\t\\evil.com",
    "https://evil.com",
    "http:evil.com",
    "javascript:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "evil.com",
    "///evil.com",
    "/\u3000/evil.com",
    "/\ud800",
    "/caf\u00e9",
    "",
]
LOCAL = {
    "/": "/",
    "/models/1?version=2": "/models/1?version=2",
    "/search?q=a%20b": "/search?q=a%20b",
    "/%2F%2Fevil.com": "/%2F%2Fevil.com",
    " /models/1 ": "/models/1",
    "/models/\t1": "/models/1",
}


@pytest.mark.parametrize("target", OFFSITE)
def test_offsite_targets_become_the_default(target: str) -> None:
    assert local_path(target, "/home") in ("/home", "/%09/evil.com")


@pytest.mark.parametrize(("target", "expected"), sorted(LOCAL.items()))
def test_local_targets_are_kept_normalised(target: str, expected: str) -> None:
    assert local_path(target) == expected


def _is_local(location: str) -> bool:
    cleaned = location.replace("\t", "").replace("\n", "").replace("\r", "").strip()
    cleaned = cleaned.replace("\\", "/")
    return cleaned.startswith("/") and not cleaned.startswith("//")


async def test_login_redirects_only_to_this_site(client: TestClient, node: Node) -> None:
    await node.accounts.add_user("alice", PASSWORD)
    await client.get("/login")
    token = client.session.cookie_jar.filter_cookies(client.make_url("/"))["civitas_form"].value
    for target in [t for t in [*OFFSITE, *LOCAL] if "\ud800" not in t]:  # unsendable
        resp = await client.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": target},
            allow_redirects=False,
        )
        assert resp.status == 303, target
        assert _is_local(resp.headers["Location"]), (target, resp.headers["Location"])
    form = await client.get("/login", params={"next": "/\t/evil.com"})
    assert 'value="//evil.com"' not in await form.text()
