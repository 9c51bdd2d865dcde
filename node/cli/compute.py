"""``civitas worker``: donate this machine's GPU (or CPU) to the nodes you choose."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import click

from node.cli.common import handle_errors
from node.logs import setup_logging

DEFAULT_DIR = Path("~/.civitas-worker")


@click.command()
@click.option("--node", "nodes", multiple=True, required=True, help="A node to serve (repeat).")
@click.option("--device", default="cpu", show_default=True, help="cuda, cuda:1, mps or cpu.")
@click.option(
    "--kinds",
    default="generate,train",
    show_default=True,
    help="Job kinds to run, comma-separated.",
)
@click.option(
    "--max-pixels",
    type=int,
    default=1024 * 1024,
    show_default=True,
    help="The largest image (width x height) this machine takes on.",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR / "cache",
    show_default=True,
    help="Where fetched models are kept, by SHA256.",
)
@click.option(
    "--config-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR / "configs",
    show_default=True,
    help="Diffusers config folders, one per base model (sd-1.5, sdxl-1.0 …).",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_DIR / "worker.key",
    show_default=True,
    help="The worker key (Ed25519, mode 0600); made on the first run.",
)
@click.option("--name", default=socket.gethostname() or "worker", help="Shown to operators.")
@click.option("--token", help="Your API token on the nodes: registers the worker key under you.")
@click.option("--once", is_flag=True, help="Exit after one finished job.")
@click.option(
    "--poll", "poll_s", type=float, default=5.0, show_default=True, help="Seconds between polls."
)
@click.option("--threads", type=int, help="CPU threads for torch (the same count repeats bytes).")
@click.option("--no-torrent", is_flag=True, help="Fetch models over HTTP only.")
@click.option("--no-dht", is_flag=True, help="Find BitTorrent peers without the DHT.")
@click.option("--allow-lan", is_flag=True, help="Accept BitTorrent peers on private addresses.")
@handle_errors
def worker(
    nodes: tuple[str, ...],
    device: str,
    kinds: str,
    max_pixels: int,
    cache: Path,
    config_root: Path,
    key_path: Path,
    name: str,
    token: str | None,
    once: bool,
    poll_s: float,
    threads: int | None,
    no_torrent: bool,
    no_dht: bool,
    allow_lan: bool,
) -> None:
    """Pop generation and training jobs from the nodes, run them, submit signed results."""
    from node.compute.worker import WorkerOptions, run_worker

    setup_logging("info", "logfmt")
    wanted = [k.strip() for k in kinds.split(",") if k.strip()]
    if not wanted or any(k not in ("generate", "train") for k in wanted):
        raise click.BadParameter("kinds are generate and/or train", param_hint="--kinds")
    options = WorkerOptions(
        nodes=list(nodes),
        key_path=key_path.expanduser(),
        cache_dir=cache.expanduser(),
        config_root=config_root.expanduser(),
        device=device,
        kinds=wanted,
        max_pixels=max_pixels,
        name=name,
        token=token,
        once=once,
        poll_s=poll_s,
        threads=threads,
        torrent=not no_torrent,
        dht=not no_dht,
        allow_lan=allow_lan,
    )
    sys.exit(run_worker(options))
