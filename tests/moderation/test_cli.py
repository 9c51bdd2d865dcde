"""``civitas takedown``: an artist signs offline and submits; the operator subscribes,
reads the queue and decides — the CLI run as subprocesses against a serving node."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.p2p.keys import SigningKey
from tests.test_cli import (
    InitialisedHome,
    Server,
    civitas,
    copy_home,
    initialised,  # noqa: F401  (the module-scoped fixture)
    mode,
    ok,
    refused,
    serving,
)

HEX = "ab" * 32


@pytest.fixture(scope="module")
def node_served(
    initialised: InitialisedHome,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("takedown")
    with serving(copy_home(initialised.path, base / "home"), base / "serve.err") as server:
        yield server


def sign(home: Path, key: Path, out: Path, *extra: str) -> str:
    return ok(
        civitas(
            home,
            "takedown",
            "sign",
            "--key",
            str(key),
            "--claimant",
            "Ada Artist",
            "--works",
            "my paintings",
            "--target",
            f"file:{HEX}",
            "--reason",
            "copyright",
            "-o",
            str(out),
            *extra,
        )
    )


def test_sign_submit_list_decide_and_subscribe(node_served: Server, tmp_path: Path) -> None:
    home, key, notice = node_served.home, tmp_path / "ada.key", tmp_path / "notice.bin"
    # Without the two statements the notice is refused, and nothing is written.
    assert "good-faith" in refused(
        civitas(
            home,
            "takedown",
            "sign",
            "--key",
            str(key),
            "--claimant",
            "Ada",
            "--works",
            "w",
            "--target",
            f"file:{HEX}",
            "--reason",
            "copyright",
            "-o",
            str(notice),
        )
    )
    assert not notice.exists()
    assert mode(key) == 0o600  # a new key, private
    out = sign(home, key, notice, "--good-faith", "--accurate")
    notice_id = re.search(r"signed notice ([0-9a-f]{64})", out).group(1)  # type: ignore[union-attr]
    assert "bad target" not in out
    assert "64 hexadecimal" in refused(
        civitas(
            home,
            "takedown",
            "sign",
            "--key",
            str(key),
            "--claimant",
            "Ada",
            "--works",
            "w",
            "--target",
            "file:zz",
            "--reason",
            "copyright",
            "--good-faith",
            "--accurate",
            "-o",
            str(tmp_path / "x.bin"),
        )
    )
    out = ok(
        civitas(
            home,
            "takedown",
            "submit",
            str(notice),
            "--node",
            node_served.url,
            "--contact",
            "ada@example.org",
        )
    )
    assert f"submitted {notice_id}: pending" in out
    assert notice_id in ok(civitas(home, "takedown", "list"))
    assert "notice" in ok(civitas(home, "takedown", "queue"))
    out = ok(
        civitas(
            home,
            "takedown",
            "decide",
            notice_id,
            "--verdict",
            "reject",
            "--note",
            "not the claimant's work",
        )
    )
    assert "reject -> rejected" in out
    assert "rejected" in ok(civitas(home, "takedown", "status", notice_id))
    assert "decision_rejected" in ok(civitas(home, "takedown", "audit"))

    other = SigningKey.generate().did
    assert f"subscribed to {other} (auto)" in ok(
        civitas(home, "takedown", "subscribe", other, "--policy", "auto")
    )
    assert f"{other}\tauto\tvia federation" in ok(civitas(home, "takedown", "subscriptions"))
    assert "did:key" in refused(civitas(home, "takedown", "subscribe", "not-a-node"))
    ok(civitas(home, "takedown", "unsubscribe", other))
    assert "no subscriptions" in ok(civitas(home, "takedown", "subscriptions"))
