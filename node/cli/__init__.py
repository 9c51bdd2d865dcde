"""The ``civitas`` command.

``init``, ``migrate``, ``reindex``, ``keys`` work on the home directly and refuse while a
node serves it; ``user`` and ``token`` work on the home when no node runs and through
the running node's API (with the admin token kept in the home) when one does; ``status``
asks the running node.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from node import __version__
from node.cli.common import Context, handle_errors, pass_ctx, run, with_node
from node.config import render_config
from node.errors import DatabaseCorrupt
from node.home import default_home


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="civitas")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The node's home directory [default: $CIVITAS_HOME or ./.civitas].",
)
@click.pass_context
def main(ctx: click.Context, home: Path | None) -> None:
    """Civitas: a federated peer-to-peer node for sharing open image models.

    Start with `civitas init`, then `civitas serve`.
    """
    ctx.obj = Context(home or default_home())


# --- init / serve / migrate / reindex ---------------------------------------------------


@main.command()
@click.option("--name", help="The node's display name.")
@click.option("--host", help="Address to listen on [default: 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [default: 8080].")
@click.option("--database-url", help="Database URL [default: SQLite in the home].")
@pass_ctx
@handle_errors
def init(
    ctx: Context, name: str | None, host: str | None, port: int | None, database_url: str | None
) -> None:
    """Create a node home: config.toml, node key, admin token, database."""
    if ctx.home.exists():
        click.echo(f"{ctx.home.path} is a Civitas home already; nothing was changed.")
        return
    from node.app import build_node

    config = ctx.config(
        **{
            "node.name": name,
            "server.host": host,
            "server.port": port,
            "database.url": database_url,
        }
    )
    node_key = ctx.home.create(render_config(config))
    node = build_node(config, ctx.home, node_key)

    async def setup() -> str:
        try:
            revision = await node.db.migrate()
            await node.log.ensure_epoch()
            return revision
        finally:
            await node.db.close()

    revision = run(setup())
    click.echo(f"created {ctx.home.path}")
    click.echo(f"  node did:   {node_key.did}")
    click.echo(f"  config:     {ctx.home.config_file}")
    click.echo(f"  database:   {node.db.safe_url} (schema {revision})")
    click.echo("start it with `civitas serve`")


@main.command()
@click.option("--host", help="Address to listen on (overrides server.host).")
@click.option("--port", type=int, help="Port to listen on (overrides server.port; 0: any).")
@click.option("--database-url", help="Database URL (overrides database.url).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@pass_ctx
@handle_errors
def serve(
    ctx: Context,
    host: str | None,
    port: int | None,
    database_url: str | None,
    log_level: str | None,
) -> None:
    """Run the node until Ctrl-C or SIGTERM."""
    from node.server import serve_forever

    ctx.home.require()
    config = ctx.config(
        **{
            "server.host": host,
            "server.port": port,
            "database.url": database_url,
            "log.level": log_level,
        }
    )
    serve_forever(config, ctx.home)


@main.command()
@pass_ctx
@handle_errors
def migrate(ctx: Context) -> None:
    """Apply pending database migrations (with the node stopped)."""
    from node.db import Database

    ctx.home.require()
    ctx.require_stopped("migrate")
    db = Database(ctx.config().database_url)

    async def go() -> str:
        try:
            return await db.migrate()
        finally:
            await db.close()

    click.echo(f"database schema at {run(go())}")


@main.command()
@pass_ctx
@handle_errors
def reindex(ctx: Context) -> None:
    """Rebuild every catalog table from the record log (with the node stopped)."""
    ctx.require_stopped("reindex")

    async def go(node: Any) -> int:
        count: int = await node.log.reindex()
        if problems := await node.db.integrity_problems():  # a rebuilt catalog on a bad file
            raise DatabaseCorrupt(
                f"replayed {count} records, but the database file is still corrupt "
                f"(quick_check: {problems[0]}; {len(problems)} problem(s)): restore it "
                "from a backup"
            )
        return count

    click.echo(f"replayed {with_node(ctx, go)} records")


@main.command()
@pass_ctx
@handle_errors
def status(ctx: Context) -> None:
    """Show the running node's identity and health."""
    from node.client import NodeClient

    client = NodeClient.for_home(ctx.home)
    click.echo(json.dumps(run(client.get("/api/admin/status")), indent=2))


from node.cli.accounts import keys, token, user  # noqa: E402  (subcommand groups)
from node.cli.backup import backup, restore  # noqa: E402
from node.cli.catalog import publish, search  # noqa: E402
from node.cli.compute import worker  # noqa: E402
from node.cli.files import files  # noqa: E402
from node.cli.invites import invite  # noqa: E402
from node.cli.peers import author, peer, sync  # noqa: E402
from node.cli.takedown import takedown  # noqa: E402
from node.cli.torrents import fetch, seed, torrents  # noqa: E402

main.add_command(user)
main.add_command(token)
main.add_command(invite)
main.add_command(keys)
main.add_command(publish)
main.add_command(search)
main.add_command(fetch)
main.add_command(torrents)
main.add_command(seed)
main.add_command(peer)
main.add_command(author)
main.add_command(sync)
main.add_command(worker)
main.add_command(takedown)
main.add_command(files)
main.add_command(backup)
main.add_command(restore)
