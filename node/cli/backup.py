"""``civitas backup`` and ``civitas restore``: a consistent copy of a home, and back."""

from __future__ import annotations

from pathlib import Path

import click

from node.backup import backup_home, renew_restored, restore_home
from node.cli.common import Context, handle_errors, pass_ctx, run
from node.db import Database


@click.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--with-files",
    is_flag=True,
    help="Also copy the file store (hard links where DEST is on the same filesystem); "
    "without it, model files must be fetched again by their SHA256.",
)
@pass_ctx
@handle_errors
def backup(ctx: Context, dest: Path, with_files: bool) -> None:
    """Copy the home (config, keys, database) into the new folder DEST; the node may run."""
    manifest = backup_home(ctx.home, ctx.config(), dest, with_files=with_files)
    click.echo(f"backed up {ctx.home.path} ({manifest['node']}) to {dest}")
    click.echo(f"  database: {manifest['database']}, secrets: {manifest['secrets']}")
    if manifest["files"] is not None:
        files = manifest["files"]
        click.echo(
            f"  files: {files['count']} ({files['bytes']} bytes, "
            f"{manifest['hard_linked']} hard-linked)"
        )
    else:
        click.echo("  files: not copied (--with-files copies them)")


@click.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--database-url", help="Restore the database here instead (PostgreSQL: empty).")
@pass_ctx
@handle_errors
def restore(ctx: Context, src: Path, database_url: str | None) -> None:
    """Restore the backup SRC into the home, which must be new or empty."""
    manifest = restore_home(src, ctx.home, database_url=database_url)
    db = Database(ctx.config().database_url)

    async def renew() -> tuple[str, str]:
        try:
            revision = await db.migrate()
            return revision, await renew_restored(db, ctx.home.path / "files")
        finally:
            await db.close()

    revision, epoch = run(renew())
    click.echo(f"restored {manifest['node']} into {ctx.home.path} (schema {revision})")
    click.echo(f"  new log epoch {epoch}: peers read this node's log again from the start")
    click.echo("start it with `civitas serve`")
