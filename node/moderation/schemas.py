"""Body rules of moderation's record types: ``takedown_notice``, ``takedown_decision``,
``counter_notice`` (field tables in ``docs/records.md``).

A **target** names what a notice is about, in a form every node resolves the same way:
a model's root, a model version or an image by record id, a file by SHA256, or an image
by its PDQ perceptual hash. A target's *key* (``kind:hex``) is how targets are compared:
a decision may only name targets its notice names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from node.errors import RecordRejected
from node.p2p import schema

NOTICE, DECISION, COUNTER = "takedown_notice", "takedown_decision", "counter_notice"

REASONS = ("copyright", "artist_opt_out", "likeness", "ncii", "illegal")
# Non-consensual intimate imagery and illegal content are purged at once, not quarantined.
URGENT_REASONS = ("ncii", "illegal")
ACTIONS = ("remove", "remove_name")
VERDICTS = ("honor", "reject", "partial")
TARGET_KINDS = ("model", "version", "image", "file", "pdq")
MAX_TARGETS = 64
MAX_PROOF_URLS = 4


@dataclass(frozen=True, order=True)
class Target:
    kind: str
    value: bytes  # a record id, a SHA256 or a PDQ hash: 32 bytes

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value.hex()}"

    def body(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}

    def public(self) -> dict[str, str]:
        shown = self.value.hex().upper() if self.kind == "file" else self.value.hex()
        return {"kind": self.kind, "value": shown}

    @classmethod
    def parse(cls, text: str) -> Target:
        """``kind:hex`` as users write it (``file:ABC…``, ``model:1f2e…``)."""
        kind, _, value = text.partition(":")
        if kind not in TARGET_KINDS:
            raise ValueError(f"a target is KIND:HEX, KIND one of {', '.join(TARGET_KINDS)}")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"{text!r}: the value must be 64 hexadecimal characters")
        return cls(kind, raw)


def targets_of(body: Mapping[str, Any]) -> list[Target]:
    return [Target(t["kind"], t["value"]) for t in body.get("targets", [])]


def _targets(body: Mapping[str, Any], *, required: bool) -> None:
    value = body.get("targets", [])
    if not isinstance(value, list) or len(value) > MAX_TARGETS or (required and not value):
        low = 1 if required else 0
        raise RecordRejected(f"body.targets must list {low} to {MAX_TARGETS} targets")
    seen = set()
    for i, item in enumerate(value):
        if not isinstance(item, dict) or item.get("kind") not in TARGET_KINDS:
            raise RecordRejected(f"body.targets[{i}].kind must be one of {', '.join(TARGET_KINDS)}")
        schema.digest(item, "value")
        key = (item["kind"], item["value"])
        if key in seen:
            raise RecordRejected("body.targets names the same target twice")
        seen.add(key)


def _one_of(body: Mapping[str, Any], key: str, choices: Sequence[str]) -> str:
    value = body.get(key)
    if value not in choices:
        raise RecordRejected(f"body.{key} must be one of {', '.join(choices)}")
    return str(value)


def _affirmed(body: Mapping[str, Any], key: str) -> None:
    if body.get(key) is not True:
        raise RecordRejected(f"body.{key} must be true: the claimant must affirm it")


def check_notice(body: Mapping[str, Any]) -> None:
    claimant = body.get("claimant")
    if not isinstance(claimant, dict):
        raise RecordRejected("body.claimant must be a map with name and did")
    schema.text(claimant, "name", max_len=200)
    schema.text(claimant, "did", max_len=64)
    schema.text(body, "works", max_len=4000)
    _targets(body, required=True)
    _one_of(body, "reason", REASONS)
    action = _one_of(body, "action", ACTIONS)
    names = schema.text_list(body, "names", max_items=16, max_len=200)
    if action == "remove_name" and not names:
        raise RecordRejected("body.names must list the terms to remove for action remove_name")
    _affirmed(body, "good_faith")
    _affirmed(body, "accurate")
    urls = schema.text_list(body, "proof_urls", max_items=MAX_PROOF_URLS, max_len=500)
    for url in urls:
        if not url.startswith(("https://", "http://")):
            raise RecordRejected("body.proof_urls items must be http(s) URLs")
    schema.text(body, "statement", max_len=8000, required=False, min_len=0)


def check_decision(body: Mapping[str, Any]) -> None:
    schema.digest(body, "notice")
    verdict = _one_of(body, "verdict", VERDICTS)
    _targets(body, required=verdict != "reject")
    if verdict == "reject" and body.get("targets"):
        raise RecordRejected("a reject decision names no targets")
    _one_of(body, "reason", REASONS)
    _one_of(body, "action", ACTIONS)
    schema.text(body, "moderator", max_len=100)
    schema.text(body, "note", max_len=4000, required=False, min_len=0)


def check_counter(body: Mapping[str, Any]) -> None:
    schema.digest(body, "notice")
    schema.text(body, "statement", max_len=8000)
    _affirmed(body, "good_faith")


def notice_claimant_mismatch(author: str, body: Mapping[str, Any]) -> str | None:
    """A notice must be signed by the key of the claimant it names."""
    claimed = body["claimant"]["did"]
    if claimed != author:
        return f"the notice names claimant {claimed} but is signed by {author}"
    return None
