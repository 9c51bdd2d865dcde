"""``civitas peer`` and ``civitas sync``: federation, through the running node."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from node.cli.common import Context, handle_errors, pass_ctx, run
from node.client import NodeClient


@click.group()
def peer() -> None:
    """The nodes this node federates with (both sides add each other)."""


@peer.command("add")
@click.argument("url")
@pass_ctx
@handle_errors
def peer_add(ctx: Context, url: str) -> None:
    """Peer with the node at URL: pull its records and push ours to it."""
    data = run(NodeClient.for_home(ctx.home).post("/api/admin/peers", {"url": url}))
    p = data["peer"]
    click.echo(f"peered with {p['name'] or p['url']} ({p['did']})")


@peer.command("list")
@pass_ctx
@handle_errors
def peer_list(ctx: Context) -> None:
    """List peers with their sync state."""
    peers = run(NodeClient.for_home(ctx.home).get("/api/admin/peers"))["peers"]
    if not peers:
        click.echo("no peers")
    for p in peers:
        click.echo(describe_peer(p))


def describe_peer(p: dict[str, Any]) -> str:
    """One line of ``peer list``: where it is, how far behind, its state, and what its
    last round accepted and refused (with the reasons counted)."""
    if p["blocked"]:
        state = "blocked"
    elif p["last_error"]:
        since = time.strftime("%Y-%m-%d %H:%M", time.gmtime(p["failing_since"] / 1000))
        state = f"failing since {since} UTC: {p['last_error']}"
    else:
        state = "connected"
    if p.get("push_error"):  # pushes back off on their own; the pulls go on
        state += f"; pushes failing: {p['push_error']}"
    refused = p.get("last_refused") or {}
    reasons = ", ".join(f"{why} {n}" for why, n in sorted(refused.items()))
    last = f"last round: {p.get('last_accepted', 0)} accepted, {sum(refused.values())} refused"
    if reasons:
        last += f" ({reasons})"
    return f"{p['did']}\t{p['url']}\tbehind by {p['behind']}\t{last}\t{state}"


@peer.command("remove")
@click.argument("did")
@pass_ctx
@handle_errors
def peer_remove(ctx: Context, did: str) -> None:
    """Stop federating with the node DID."""
    run(NodeClient.for_home(ctx.home).request("DELETE", f"/api/admin/peers/{did}"))
    click.echo(f"removed {did}")


@peer.command("block")
@click.argument("did")
@pass_ctx
@handle_errors
def peer_block(ctx: Context, did: str) -> None:
    """Block the node DID: no pulls or pushes, and its pushes are refused."""
    run(NodeClient.for_home(ctx.home).post(f"/api/admin/peers/{did}/block"))
    click.echo(f"blocked {did}")


@peer.command("unblock")
@click.argument("did")
@pass_ctx
@handle_errors
def peer_unblock(ctx: Context, did: str) -> None:
    """Federate with the node DID again."""
    run(NodeClient.for_home(ctx.home).post(f"/api/admin/peers/{did}/unblock"))
    click.echo(f"unblocked {did}")


@click.command()
@pass_ctx
@handle_errors
def sync(ctx: Context) -> None:
    """Pull from and push to every peer now (it also happens every sync_interval_s)."""
    report = run(NodeClient.for_home(ctx.home).post("/api/admin/sync"))
    click.echo(json.dumps(report["peers"], indent=2))


@click.group()
def author() -> None:
    """Author keys this node refuses (their records are suppressed while blocked)."""


@author.command("block")
@click.argument("did")
@click.option("--reason", default="", help="Why, for the other operators of this node.")
@pass_ctx
@handle_errors
def author_block(ctx: Context, did: str, reason: str) -> None:
    """Refuse the author DID's records and suppress those this node holds."""
    data = run(
        NodeClient.for_home(ctx.home).post(f"/api/admin/authors/{did}/block", {"reason": reason})
    )
    click.echo(f"blocked {did}: {data['suppressed']} records suppressed")


@author.command("unblock")
@click.argument("did")
@pass_ctx
@handle_errors
def author_unblock(ctx: Context, did: str) -> None:
    """Lift the block on the author DID."""
    data = run(NodeClient.for_home(ctx.home).post(f"/api/admin/authors/{did}/unblock"))
    click.echo(f"unblocked {did}: {data['restored']} records shown again")


@author.command("unfreeze")
@click.argument("did")
@click.option("--keep", required=True, help="The new key (did) of the rotation to keep.")
@pass_ctx
@handle_errors
def author_unfreeze(ctx: Context, did: str, keep: str) -> None:
    """Settle a frozen identity: DID rotated two ways; keep its rotation to KEEP."""
    run(NodeClient.for_home(ctx.home).post(f"/api/admin/authors/{did}/unfreeze", {"keep": keep}))
    click.echo(f"kept {did} -> {keep}; the other rotations are rejected on this node")


@author.command("blocked")
@pass_ctx
@handle_errors
def author_blocked(ctx: Context) -> None:
    """List blocked author keys."""
    authors = run(NodeClient.for_home(ctx.home).get("/api/admin/authors/blocked"))["authors"]
    if not authors:
        click.echo("no blocked authors")
    for a in authors:
        click.echo(f"{a['did']}\t{a['reason']}")
