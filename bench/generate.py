"""Generation: the tiny pipeline run directly, against the same job through a node.

Usage: .venv/bin/python bench/generate.py [--device cpu|cuda] [--size tiny|small]
       [--px 64] [--steps 20] [--count 2] [--repeats 5] [--threads N] [--keep-dir]

In one run, on this machine:
  (a) direct: ``pipelines.generate`` on the tiny model (random weights, built offline),
      the pipeline loaded once beforehand (not timed), --repeats runs
  (b) through a job: a real node (SQLite in a temp dir, HTTP on 127.0.0.1, no
      BitTorrent) with the same checkpoint published, and a worker (``civitas worker``'s
      loop, in this process) serving it. Each job is submitted with ``POST /api/jobs`` and
      timed until ``GET /api/jobs/{id}`` says done: leasing, the same generation, uploading,
      verifying (decode, ``parameters``, attestation) and publishing the images as records.
      One warm-up job (model fetch and pipeline load) is run first and not counted.
Prints both medians and the overhead ratio (b)/(a). ``--size small`` is a (32, 64)-channel
UNet; with ``--device cuda --size small --px 512`` the same benchmark measures real image
sizes on a GPU. torch runs on --threads threads (default: 1 on CPU, so results repeat).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from node.app import build_node, create_app, set_public_url
from node.catalog.publish import ModelFields, VersionFields
from node.config import load_config, render_config
from node.home import Home

SETTINGS: dict[tuple[str, str], Any] = {
    ("server", "port"): 0,
    ("torrent", "enabled"): False,
    ("torrent", "listen_host"): "127.0.0.1",
    ("torrent", "listen_port"): 0,
    ("torrent", "dht"): False,
}
POLL_S = 0.01


def say(text: str = "") -> None:
    print(text, flush=True)


def job_params(version: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "model_version_id": version,
        "prompt": "a watercolor fox in a forest",
        "negative_prompt": "blurry",
        "seed": seed,
        "steps": args.steps,
        "cfg_scale": "7",
        "sampler": "Euler a",
        "width": args.px,
        "height": args.px,
        "count": args.count,
    }


def bench_direct(tiny: Any, args: argparse.Namespace) -> list[float]:
    from node.compute import pipelines
    from node.compute.specs import GenerateRequest

    cache = pipelines.PipelineCache()

    def request(seed: int) -> GenerateRequest:
        return GenerateRequest(
            checkpoint=tiny.checkpoint,
            checkpoint_sha256=tiny.sha256,
            base_model=tiny.base_model,
            config_root=tiny.config_root,
            model_name="model",
            model_hash=tiny.sha256[:10],
            prompt="a watercolor fox in a forest",
            negative_prompt="blurry",
            seed=seed,
            steps=args.steps,
            sampler="Euler a",
            width=args.px,
            height=args.px,
            count=args.count,
        )

    pipelines.generate(request(0), device=args.device, cache=cache)  # load, warm up
    times = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        pipelines.generate(request(100 + i), device=args.device, cache=cache)
        times.append(time.perf_counter() - t0)
    return times


async def bench_job(root: Path, tiny: Any, args: argparse.Namespace) -> dict[str, list[float]]:
    from aiohttp import ClientSession, web

    from node.compute.worker import Worker, WorkerOptions
    from node.p2p.keys import SigningKey

    home = Home(root / "node")
    config = load_config(home.path, SETTINGS, environ={})
    home.create(render_config(config))
    node = build_node(config, home)
    await node.db.migrate()
    await node.log.ensure_epoch()
    app = create_app(node, home.admin_token())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    set_public_url(app, url)
    try:
        user = await node.accounts.add_user("bench", "correct horse battery")
        token = await node.accounts.create_token("bench")
        published = await node.catalog.publisher.publish_file(
            home.author_key(user.did),
            tiny.checkpoint,
            ModelFields(name="Tiny", type="Checkpoint"),
            VersionFields(base_model=tiny.base_model),
        )
        model = (await node.catalog.views.models_by_root([published.model_root]))[0]
        version = model["modelVersions"][0]["id"]
        options = WorkerOptions(
            nodes=[url],
            key_path=root / "worker.key",
            cache_dir=root / "worker-cache",
            config_root=tiny.config_root,
            device=args.device,
            max_pixels=args.px * args.px,
            token=token,
            once=True,
            poll_s=0.05,
            threads=args.threads,
            dht=False,
            allow_lan=True,  # the node is on 127.0.0.1
        )
        worker = Worker(options, SigningKey.generate())
        auth = {"Authorization": f"Bearer {token}"}
        out: dict[str, list[float]] = {"total": [], "waiting": [], "result": []}
        async with ClientSession() as http:
            for i in range(args.repeats + 1):
                t0 = time.perf_counter()
                resp = await http.post(
                    f"{url}/api/jobs", json=job_params(version, args, 100 + i), headers=auth
                )
                job = await resp.json()
                assert resp.status == 201, job
                await worker.run()
                while True:
                    shown = await (
                        await http.get(f"{url}/api/jobs/{job['id']}", headers=auth)
                    ).json()
                    if shown["state"] in ("done", "failed"):
                        break
                    await asyncio.sleep(POLL_S)
                assert shown["state"] == "done", shown
                if i > 0:  # the first one fetched the model and loaded the pipeline
                    out["total"].append(time.perf_counter() - t0)
        worker.close()
        return out
    finally:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--px", type=int, default=64, help="image side (multiple of 8)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--count", type=int, default=2, help="images per job")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: 1 on CPU)")
    parser.add_argument("--keep-dir", action="store_true", help="keep the temp dir")
    args = parser.parse_args()
    if args.px % 8 or args.repeats < 1:
        parser.error("--px must be a multiple of 8 and --repeats >= 1")
    if args.threads is None and args.device == "cpu":
        args.threads = 1

    import torch

    from node.compute.tiny import write_tiny_model

    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="civitas-bench-generate-"))
    try:
        say(
            f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; device {args.device},"
            f" model {args.size}, {args.count} x {args.px}x{args.px}, {args.steps} steps,"
            f" torch threads {torch.get_num_threads()}"
        )
        tiny = write_tiny_model(root / "model", size=args.size)
        say(f"model: {tiny.checkpoint.stat().st_size:,} bytes, SHA256 {tiny.sha256[:12]}…")
        direct = bench_direct(tiny, args)
        say(
            f"(a) direct pipelines.generate: median {statistics.median(direct):.3f} s"
            f"  (runs: {', '.join(f'{t:.3f}' for t in direct)})"
        )
        via = asyncio.run(bench_job(root, tiny, args))["total"]
        say(
            f"(b) through a job, submit -> done: median {statistics.median(via):.3f} s"
            f"  (runs: {', '.join(f'{t:.3f}' for t in via)})"
        )
        ratio = statistics.median(via) / statistics.median(direct)
        overhead = statistics.median(via) - statistics.median(direct)
        say(f"overhead ratio (b)/(a): {ratio:.2f}  ({overhead * 1000:.0f} ms per job)")
    finally:
        if args.keep_dir:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
