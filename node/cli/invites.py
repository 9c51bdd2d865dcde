"""``civitas invite``: single-use sign-up codes for a node with ``accounts.registration =
"invite"`` (see :mod:`node.accounts.signup`)."""

from __future__ import annotations

from typing import Any

import click

from node.cli.common import Context, handle_errors, pass_ctx, run, utc_time, with_node
from node.client import NodeClient

CLI_ADMIN = "cli"  # who made an invite from the command line with no node running


@click.group()
def invite() -> None:
    """Sign-up invite codes (for accounts.registration = "invite")."""


@invite.command("create")
@pass_ctx
@handle_errors
def invite_create(ctx: Context) -> None:
    """Print a new single-use invite code (shown once; only its digest is kept)."""
    if ctx.home.running() is not None:
        data = run(NodeClient.for_home(ctx.home).post("/api/admin/invites", {}))
        code, expires = data["code"], data["invite"]["expires"]
    else:
        code, made = with_node(ctx, lambda node: node.signups.create_invite(CLI_ADMIN))
        expires = made.expires
    click.echo(code)
    click.echo(f"valid until {utc_time(expires)}", err=True)


@invite.command("list")
@pass_ctx
@handle_errors
def invite_list(ctx: Context) -> None:
    """List invites: id, made by, made, expires, and who used it."""
    if ctx.home.running() is not None:
        rows: list[Any] = run(NodeClient.for_home(ctx.home).get("/api/admin/invites"))["invites"]
    else:
        rows = [i.public() for i in with_node(ctx, lambda node: node.signups.list_invites())]
    for i in rows:
        used = f"used by {i['used_by']}" if i["used_by"] else "unused"
        click.echo(
            f"{i['id']}\t{i['created_by']}\t{utc_time(i['created'])}\t{utc_time(i['expires'])}\t{used}"
        )


@invite.command("revoke")
@click.argument("invite_id", type=int)
@pass_ctx
@handle_errors
def invite_revoke(ctx: Context, invite_id: int) -> None:
    """Delete unused invite INVITE_ID (see `invite list`): its code is refused from now on."""
    if ctx.home.running() is not None:
        run(NodeClient.for_home(ctx.home).delete(f"/api/admin/invites/{invite_id}"))
    else:
        with_node(ctx, lambda node: node.signups.revoke_invite(invite_id))
    click.echo(f"revoked invite {invite_id}")
