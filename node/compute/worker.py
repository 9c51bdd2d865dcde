"""The worker: pops jobs from the nodes it serves, runs them, and delivers the results.

One job at a time. The model runs in a thread (torch releases the GIL), so the event
loop keeps renewing the lease with progress reports while it computes; when a node
answers a report with 409 (the job was cancelled, or the lease was lost) the next
progress callback raises and the run stops. Outputs are uploaded by SHA256 and submitted
with the worker's attestation: its key's signature over each output's SHA256.

torch, diffusers and peft are imported only here, when a job runs (through
``pipelines`` and ``training``); :func:`run_worker` refuses to start without them and
says what to install.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from node.catalog.schemas import attestation_message
from node.client import RemoteError
from node.compute.link import TIMEOUT, ModelCache, NodeLink, NodeUnreachable
from node.compute.requests import generate_request, train_request
from node.compute.torrent_fetch import TorrentFetcher
from node.errors import CivitasError
from node.p2p.keys import SigningKey, load_key, save_key

log = logging.getLogger("civitas.worker")
T = TypeVar("T")


class JobAbandoned(Exception):
    """Raised inside the model's progress callback to stop a job nobody wants any more."""


@dataclass
class WorkerOptions:
    nodes: list[str]
    key_path: Path
    cache_dir: Path
    config_root: Path
    device: str = "cpu"
    kinds: list[str] = field(default_factory=lambda: ["generate", "train"])
    max_pixels: int = 1024 * 1024
    name: str = field(default_factory=lambda: socket.gethostname() or "worker")
    token: str | None = None
    once: bool = False
    poll_s: float = 5.0
    threads: int | None = None
    torrent: bool = True  # fetch models by BitTorrent first (then HTTP)
    dht: bool = True
    allow_lan: bool = False  # BitTorrent peers on private addresses (a LAN, or tests)


def load_or_create_key(path: Path) -> SigningKey:
    """The worker key at ``path``; a new one (written 0600) on the first run."""
    if path.exists():
        return load_key(path)
    key = SigningKey.generate()
    save_key(path, key)
    return key


@dataclass
class _Running:
    """What the model thread reports and what the loop tells it."""

    report: dict[str, Any] = field(default_factory=dict)
    changed: bool = False
    abandoned: str | None = None


class Worker:
    def __init__(self, options: WorkerOptions, key: SigningKey) -> None:
        self.options = options
        self.key = key
        self.torrents = (
            TorrentFetcher(
                options.cache_dir / "torrents", dht=options.dht, allow_lan=options.allow_lan
            )
            if options.torrent
            else None
        )
        self.cache = ModelCache(options.cache_dir / "models", self.torrents)
        self.pipelines: Any = None  # pipelines.PipelineCache, made on the first job
        self.jobs_done = 0
        # One thread runs every model, so torch's per-thread settings (OpenMP's thread
        # count) are set once and hold for every job.
        self._model_thread = ThreadPoolExecutor(
            1,
            thread_name_prefix="civitas-model",
            initializer=_init_model_thread,
            initargs=(options.threads,),
        )

    def close(self) -> None:
        self._model_thread.shutdown(wait=False, cancel_futures=True)

    async def _in_model_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._model_thread, partial(fn, *args, **kwargs))

    async def run(self) -> int:
        """Serve the nodes until stopped (or, with ``once``, until one job is finished)."""
        if self.torrents is not None:
            await self.torrents.start()
        try:
            return await self._serve()
        finally:
            if self.torrents is not None:
                await self.torrents.stop()

    async def _serve(self) -> int:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            links = [NodeLink(url, self.key, session) for url in self.options.nodes]
            for link in links:
                await link.connect()
                details = {
                    "name": self.options.name,
                    "kinds": self.options.kinds,
                    "max_pixels": self.options.max_pixels,
                    "device": self.options.device,
                }
                try:
                    await link.register(self.options.token, details)
                    log.info("registered", extra={"node": link.base_url, "did": self.key.did})
                except RemoteError as exc:
                    if exc.status != 401 or self.options.token:
                        raise
                    # no token: fine if the key is registered there already (pop will say)
            while True:
                worked = False
                for link in links:
                    try:
                        answer = await link.pop(self.options.kinds, self.options.max_pixels)
                    except RemoteError as exc:
                        if exc.status == 401:  # not registered there: nothing will change
                            raise CivitasError(f"{link.base_url}: {exc.message}") from None
                        log.warning("pop refused", extra={"node": link.base_url, "error": str(exc)})
                        continue
                    except NodeUnreachable as exc:
                        log.warning("pop failed", extra={"node": link.base_url, "error": str(exc)})
                        continue
                    if answer.get("job") is None:
                        log.debug("nothing to do", extra={"reason": answer.get("reason")})
                        continue
                    await self.run_job(link, answer["job"])
                    worked = True
                    if self.options.once:
                        return 0
                if not worked:
                    await asyncio.sleep(self.options.poll_s)

    async def run_job(self, link: NodeLink, lease: dict[str, Any]) -> None:
        job_id = lease["id"]
        log.info("job leased", extra={"node": link.base_url, "job": job_id, "kind": lease["kind"]})
        state = _Running(report={"stage": "fetching"}, changed=True)
        beat = asyncio.create_task(
            self._heartbeat(link, job_id, lease, state), name=f"heartbeat-{job_id}"
        )
        try:
            paths = {f["sha256"]: await self.cache.ensure(link, f) for f in lease["files"]}
            if lease["kind"] == "generate":
                outputs = await self._generate(lease, paths, state)
            else:
                outputs = await self._train(link, lease, paths, state)
            if state.abandoned:
                raise JobAbandoned(state.abandoned)
            beat.cancel()
            await link.progress(job_id, state.report)  # the last step, for the record
            manifest = []
            for data in outputs:
                await link.upload(job_id, data)
                manifest.append(self._attest(data))
            await link.result(job_id, manifest)
            self.jobs_done += 1
            log.info("job done", extra={"job": job_id, "outputs": len(outputs)})
        except JobAbandoned as exc:
            log.warning("job abandoned", extra={"job": job_id, "why": str(state.abandoned or exc)})
        except RemoteError as exc:
            log.warning("the node refused", extra={"job": job_id, "error": exc.message})
            if exc.status != 409:
                await self._fail(link, job_id, f"the node refused the result: {exc.message}")
        except Exception as exc:  # the worker outlives any one job's failure
            message = exc.message if isinstance(exc, CivitasError) else str(exc)
            log.warning("job failed", extra={"job": job_id, "error": message}, exc_info=True)
            await self._fail(link, job_id, message or type(exc).__name__)
        finally:
            beat.cancel()
            try:
                await beat
            except asyncio.CancelledError:
                pass

    async def _fail(self, link: NodeLink, job_id: int, message: str) -> None:
        try:
            await link.fail(job_id, message)
        except (RemoteError, NodeUnreachable):
            pass  # the lease runs out and the node requeues it anyway

    def _attest(self, data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).digest()
        sig = self.key.sign(attestation_message(digest))
        return {
            "sha256": digest.hex().upper(),
            "size": len(data),
            "sig": base64.urlsafe_b64encode(sig).decode().rstrip("="),
        }

    async def _heartbeat(
        self, link: NodeLink, job_id: int, lease: dict[str, Any], state: _Running
    ) -> None:
        """Report progress (and so renew the lease) often enough that it never lapses."""
        interval = max(0.2, min(float(lease["lease_s"]) / 4, 10.0))
        while True:
            try:
                await link.progress(job_id, state.report)
                state.changed = False
            except RemoteError as exc:
                if exc.status == 409:
                    state.abandoned = exc.message
                    return
            except NodeUnreachable:
                pass
            await asyncio.sleep(interval)

    def _callback_guard(self, state: _Running) -> None:
        if state.abandoned:
            raise JobAbandoned(state.abandoned)

    async def _generate(
        self, lease: dict[str, Any], paths: dict[str, Path], state: _Running
    ) -> list[bytes]:
        from node.compute import pipelines

        if self.pipelines is None:
            self.pipelines = pipelines.PipelineCache()

        def progress(step: int, total: int) -> None:
            self._callback_guard(state)
            state.report = {"step": step, "total": total}
            state.changed = True

        req = generate_request(lease, paths, self.options.config_root, progress)
        state.report = {"stage": "loading"}
        images = await self._in_model_thread(
            pipelines.generate, req, device=self.options.device, cache=self.pipelines
        )
        return [image.png for image in images]

    async def _train(
        self, link: NodeLink, lease: dict[str, Any], paths: dict[str, Path], state: _Running
    ) -> list[bytes]:
        from node.compute import training

        images = [
            (await link.job_input(lease["id"], item["sha256"]), item["caption"])
            for item in lease["inputs"]
        ]
        total = lease["params"]["steps"]

        def progress(step: int, loss: float) -> None:
            self._callback_guard(state)
            state.report = {"step": step, "total": total, "loss": round(float(loss), 6)}
            state.changed = True

        req = train_request(lease, paths, self.options.config_root, images)
        state.report = {"stage": "loading"}
        lora = await self._in_model_thread(
            training.train_lora, req, device=self.options.device, progress=progress
        )
        return [lora]


def _init_model_thread(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def run_worker(options: WorkerOptions) -> int:
    """Start a worker (the ``civitas worker`` command); refuses without torch and friends."""
    from node.compute.pipelines import compute_available

    reason = compute_available()
    if reason is not None:
        raise CivitasError(f"this machine cannot run a worker: {reason}")
    if not options.nodes:
        raise CivitasError("name at least one node: --node URL")
    key = load_or_create_key(options.key_path)
    os.makedirs(options.cache_dir, exist_ok=True)
    worker = Worker(options, key)
    try:
        return asyncio.run(worker.run())
    finally:
        worker.close()
