"""``civitas user``, ``civitas token`` and ``civitas keys``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from node.cli.common import Context, handle_errors, pass_ctx, run, utc_time, with_node
from node.client import NodeClient
from node.errors import BadRequest
from node.p2p.keys import load_key, save_key, write_private_file


def _password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise BadRequest("no terminal to ask for a password; pass --password-stdin")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@click.group()
def user() -> None:
    """Local accounts (admin, moderator, member)."""


@user.command("add")
@click.argument("name")
@click.option("--admin", "role", flag_value="admin", help="Make an administrator.")
@click.option("--moderator", "role", flag_value="moderator", help="Make a moderator.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_ctx
@handle_errors
def user_add(ctx: Context, name: str, role: str | None, password_stdin: bool) -> None:
    """Create account NAME with its own author key (the password is asked for)."""
    password = _password(password_stdin)
    role = role or "member"
    if ctx.home.running() is not None:
        data = run(
            NodeClient.for_home(ctx.home).post(
                "/api/admin/users", {"name": name, "password": password, "role": role}
            )
        )
        did = data["user"]["did"]
    else:
        did = with_node(ctx, lambda node: node.accounts.add_user(name, password, role)).did
    click.echo(f"created {role} {name} ({did})")


@user.command("list")
@pass_ctx
@handle_errors
def user_list(ctx: Context) -> None:
    """List the local accounts."""
    if ctx.home.running() is not None:
        users: list[Any] = run(NodeClient.for_home(ctx.home).get("/api/admin/users"))["users"]
    else:
        users = [u.public() for u in with_node(ctx, lambda node: node.accounts.list_users())]
    for u in users:
        click.echo(f"{u['name']}\t{u['role']}\t{u['did']}")


@click.group()
def token() -> None:
    """API tokens for the CLI and the JSON API."""


@token.command("create")
@click.argument("name")
@click.option("--label", default="cli", show_default=True, help="What the token is for.")
@click.option("--expires-days", type=int, help="Refuse the token after this many days.")
@pass_ctx
@handle_errors
def token_create(ctx: Context, name: str, label: str, expires_days: int | None) -> None:
    """Print a new API token for user NAME (shown once; stored hashed)."""
    if ctx.home.running() is not None:
        data = run(
            NodeClient.for_home(ctx.home).post(
                f"/api/admin/users/{name}/tokens", {"label": label, "expires_days": expires_days}
            )
        )
        value = data["token"]
    else:
        value = with_node(ctx, lambda node: node.accounts.create_token(name, label, expires_days))
    click.echo(value)


@token.command("list")
@click.argument("name")
@pass_ctx
@handle_errors
def token_list(ctx: Context, name: str) -> None:
    """List user NAME's tokens: id, label, created, expires (never their values)."""
    if ctx.home.running() is not None:
        tokens = run(NodeClient.for_home(ctx.home).get(f"/api/admin/users/{name}/tokens"))
        rows: list[Any] = tokens["tokens"]
    else:
        rows = with_node(ctx, lambda node: node.accounts.list_tokens(name))
    for t in rows:
        expires = utc_time(t["expires"]) if t["expires"] else "never"
        state = "\texpired" if t["expired"] else ""
        click.echo(f"{t['id']}\t{t['label']}\t{utc_time(t['created'])}\t{expires}{state}")


@token.command("revoke")
@click.argument("name")
@click.argument("token_id", type=int)
@pass_ctx
@handle_errors
def token_revoke(ctx: Context, name: str, token_id: int) -> None:
    """Revoke user NAME's token TOKEN_ID (see `token list`): it is refused from now on."""
    if ctx.home.running() is not None:
        run(NodeClient.for_home(ctx.home).delete(f"/api/admin/users/{name}/tokens/{token_id}"))
    else:
        with_node(ctx, lambda node: node.accounts.revoke_token(name, token_id))
    click.echo(f"revoked token {token_id} of {name}")


@click.group()
def keys() -> None:
    """Export and import the node's or a user's Ed25519 key (PKCS#8 PEM)."""


def _which(node_key: bool, user_name: str | None) -> None:
    if node_key == bool(user_name):
        raise BadRequest("say whose key: --node or --user NAME")


@keys.command("export")
@click.option("--node", "node_key", is_flag=True, help="The node's own key.")
@click.option("--user", "user_name", help="The author key of user NAME.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (mode 0600) instead of standard output.",
)
@pass_ctx
@handle_errors
def keys_export(ctx: Context, node_key: bool, user_name: str | None, out: Path | None) -> None:
    """Export a private key."""
    _which(node_key, user_name)
    ctx.home.require()
    if node_key:
        key = ctx.home.node_key()
    else:
        did = with_node(ctx, lambda node: node.accounts.get_user(user_name)).did
        key = ctx.home.author_key(did)
    if out is None:
        click.echo(key.to_pem().decode(), nl=False)
    else:
        write_private_file(out, key.to_pem())
        click.echo(f"wrote {key.did} to {out}", err=True)


@keys.command("rotate")
@click.option("--user", "user_name", required=True, help="Rotate user NAME's author key.")
@pass_ctx
@handle_errors
def keys_rotate(ctx: Context, user_name: str) -> None:
    """Rotate a user's author key to its pre-committed next key (with the node stopped)."""
    ctx.home.require()
    ctx.require_stopped("rotate keys")
    user = with_node(ctx, lambda node: node.accounts.rotate_key(user_name))
    click.echo(f"rotated {user_name} to {user.did}")


@keys.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--node", "node_key", is_flag=True, help="Replace the node's key.")
@click.option("--user", "user_name", help="Give user NAME this author key.")
@pass_ctx
@handle_errors
def keys_import(ctx: Context, file: Path, node_key: bool, user_name: str | None) -> None:
    """Import a private key from FILE (with the node stopped)."""
    _which(node_key, user_name)
    ctx.home.require()
    ctx.require_stopped("import keys")
    key = load_key(file)
    if node_key:
        save_key(ctx.home.node_key_file, key, overwrite=True)
        did = key.did
    else:
        did = with_node(ctx, lambda node: node.accounts.set_author_key(user_name, key)).did
    click.echo(f"imported {did}")
