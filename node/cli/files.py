"""``civitas files``: the files this node wants (previews its records need), through the
running node."""

from __future__ import annotations

import time

import click

from node.cli.common import Context, handle_errors, pass_ctx, run
from node.client import NodeClient


@click.group()
def files() -> None:
    """Files this node's records need (image previews) that it does not hold yet."""


@files.command("wanted")
@click.option("--retry", is_flag=True, help="Make every wanted file due now, then list.")
@pass_ctx
@handle_errors
def files_wanted(ctx: Context, retry: bool) -> None:
    """List wanted files: fetched from peers in the background, retried with backoff."""
    client = NodeClient.for_home(ctx.home)
    if retry:
        due = run(client.post("/api/admin/wanted/retry"))["due"]
        click.echo(f"{due} wanted file{'s' * (due != 1)} due now")
    data = run(client.get("/api/admin/wanted"))
    if not data["count"]:
        click.echo("no files wanted")
        return
    click.echo(f"{data['count']} file{'s' * (data['count'] != 1)} wanted")
    for f in data["files"]:
        due = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(f["next_try"] / 1000))
        tries = f"{f['attempts']} tr{'ies' if f['attempts'] != 1 else 'y'}"
        why = f"\t{f['last_error']}" if f["last_error"] else ""
        click.echo(f"{f['sha256']}\t{f['size'] or '?'} bytes\t{tries}\tnext {due} UTC{why}")
