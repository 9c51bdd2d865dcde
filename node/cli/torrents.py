"""``civitas fetch``, ``civitas torrents`` and ``civitas seed``: files over BitTorrent."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import click

from node.cli.common import Context, handle_errors, pass_ctx, run
from node.client import NodeClient
from node.errors import CivitasError

POLL_S = 0.5


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def _eta(status: dict[str, Any]) -> str:
    rate = status["download_rate"]
    if not rate:
        return "--:--"
    seconds = int((status["size"] - status["done"]) / rate)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _line(status: dict[str, Any]) -> str:
    width = 30
    filled = int(width * status["progress"])
    bar = "#" * filled + "-" * (width - filled)
    return (
        f"\r[{bar}] {status['progress'] * 100:5.1f}% {_size(status['done'])}/"
        f"{_size(status['size'])} {_size(status['download_rate'])}/s "
        f"{status['peers']} peers ETA {_eta(status)} {status['state']:<11}"
    )


async def _follow(client: NodeClient, infohash: str, limit_s: float | None) -> dict[str, Any]:
    started = time.monotonic()
    while True:
        status: dict[str, Any] = await client.get(f"/api/downloads/{infohash}")
        click.echo(_line(status), nl=False, err=True)
        if status["state"] in ("complete", "failed"):
            click.echo("", err=True)
            return status
        if status["state"] == "paused" and status.get("error"):  # e.g. a full disk
            click.echo("", err=True)
            raise CivitasError(f"fetch paused: {status['error']}")
        if limit_s is not None and time.monotonic() - started > limit_s:
            click.echo("", err=True)
            raise CivitasError(f"still fetching after {limit_s:.0f} s; it goes on in the node")
        await asyncio.sleep(POLL_S)


@click.command()
@click.argument("target")
@click.option(
    "--from",
    "nodes",
    multiple=True,
    metavar="URL",
    help="A node that has the file (repeatable); magnets carry their own sources.",
)
@click.option("--no-wait", is_flag=True, help="Start the download and return.")
@click.option("--timeout", type=float, help="Stop following after this many seconds.")
@pass_ctx
@handle_errors
def fetch(
    ctx: Context, target: str, nodes: tuple[str, ...], no_wait: bool, timeout: float | None
) -> None:
    """Fetch a model file into this node: TARGET is a magnet link, version id or SHA256.

    The file is verified against the SHA256 in its signed record before it is stored and
    seeded. Follows progress with a live bar until the file is verified.
    """
    client = NodeClient.for_home(ctx.home)

    async def go() -> dict[str, Any]:
        status: dict[str, Any] = await client.post(
            "/api/downloads", {"target": target, "from": list(nodes)}
        )
        if no_wait or status["state"] == "complete":
            return status
        return await _follow(client, status["infohash"], timeout)

    status = run(go())
    if status["state"] == "failed":
        raise CivitasError(f"fetch failed: {status['error']}")
    verb = "fetching" if status["state"] not in ("complete",) else "verified and stored"
    click.echo(f"{verb}: {status['name']} ({_size(status['size'])}) sha256 {status['sha256']}")


@click.command()
@pass_ctx
@handle_errors
def torrents(ctx: Context) -> None:
    """List what the node seeds and downloads, with rates and peers."""
    data = run(NodeClient.for_home(ctx.home).get("/api/downloads"))
    rows = data["torrents"]
    if not rows and not data["downloads"]:
        click.echo("nothing seeded or downloading")
    for t in rows:
        click.echo(
            f"{t['infohash']}  {t['state']:<11} {t['progress'] * 100:5.1f}%  "
            f"up {_size(t['upload_rate'])}/s  down {_size(t['download_rate'])}/s  "
            f"{t['peers']} peers  {t['name']}"
        )
    for d in data["downloads"]:
        if d["state"] in ("failed",):
            click.echo(f"{d['infohash']}  failed       {d['name']}: {d['error']}")


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--user", "user_name", required=True, help="Who publishes the files.")
@click.option("--base-model", help="Base model, where detection cannot tell.")
@pass_ctx
@handle_errors
def seed(ctx: Context, directory: Path, user_name: str, base_model: str | None) -> None:
    """Publish and seed every .safetensors in DIRECTORY where it lies (no copy)."""
    client = NodeClient.for_home(ctx.home)
    files = sorted(p for p in directory.rglob("*.safetensors") if p.is_file())
    if not files:
        raise CivitasError(f"no .safetensors files in {directory}")
    failures = 0
    for path in files:
        body: dict[str, Any] = {
            "path": str(path.resolve()),
            "user": user_name,
            "name": path.stem,
            "in_place": True,
        }
        if base_model:
            body["base_model"] = base_model
        try:
            result = run(client.post("/api/models/publish-path", body))
        except CivitasError as exc:
            failures += 1
            click.echo(f"skipped {path}: {exc.message}", err=True)
            continue
        state = "seeding" if result["created"] else "already seeding"
        click.echo(f"{state}: {path} (model {result['model']['id']})")
    if failures:
        raise CivitasError(f"{failures} of {len(files)} files were not seeded")
