"""Workers end to end on CPU with the tiny model: real nodes, real diffusers, real peft.

Generation and training run through the real worker (in-process for speed, and once as
a ``civitas worker`` process); one worker process is killed mid-job and another finishes
the requeued job. torch runs on one thread so the same seed gives the same bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from node.accounts.service import User
from node.app import Node, create_app, set_public_url
from node.compute.worker import Worker, WorkerOptions
from node.http import Principal
from node.p2p.keys import SigningKey
from tests.compute.conftest import Version, publish, require_extra

require_extra("diffusers")
LEASE_S = 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import torch

    from node.compute.tiny import write_tiny_model

    torch.set_num_threads(1)
    return write_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture
async def live(node: Node) -> AsyncIterator[TestClient]:
    """The node on 127.0.0.1 with short leases, so a lost worker is noticed in seconds."""
    node.config.compute.lease_s = LEASE_S
    app = create_app(node, node.home.admin_token())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        set_public_url(app, str(client.make_url("")))
        yield client


@pytest.fixture
async def base(node: Node, alice: User, tiny: Any) -> Version:
    return await publish(node, alice, tiny.checkpoint, type="Checkpoint", name="Tiny")


def _options(client: TestClient, tmp_path: Path, tiny: Any, name: str, **kw: Any) -> WorkerOptions:
    return WorkerOptions(
        nodes=[str(client.make_url("")).rstrip("/")],
        key_path=tmp_path / f"{name}.key",
        cache_dir=tmp_path / f"{name}-cache",
        config_root=tiny.config_root,
        once=True,
        poll_s=0.2,
        name=name,
        threads=1,
        dht=False,
        allow_lan=True,
        **kw,
    )


async def _in_process_worker(
    node: Node,
    client: TestClient,
    tmp_path: Path,
    tiny: Any,
    donor: User,
    name: str = "w",
    torrent: bool = False,
    node_worker: bool = False,
) -> Worker:
    """A worker donated by ``donor``; ``node_worker``: an admin made it serve everyone."""
    token = await node.accounts.create_token(donor.name)
    options = _options(client, tmp_path, tiny, name, token=token, torrent=torrent)
    key = SigningKey.generate()
    if node_worker:
        await node.compute.queue.registry.register(donor, {"did": key.did, "name": name})
        await node.compute.queue.registry.set_serves(Principal(node_admin=True), key.did, "all")
    return Worker(options, key)


async def _publish_images(
    client: TestClient, auth: dict[str, str], job: dict[str, Any]
) -> list[dict[str, Any]]:
    """The requester publishes every generated image of a job (they are private until then)."""
    published = []
    for r in job["results"]:
        path = f"/api/jobs/{job['id']}/outputs/{r['sha256']}/publish"
        resp = await client.post(path, json={}, headers=auth)
        assert resp.status == 201, await resp.text()
        published.append(dict(await resp.json()))
    return published


async def _submit(client: TestClient, auth: dict[str, str], job: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/jobs", json=job, headers=auth)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def _job(client: TestClient, auth: dict[str, str], job_id: int) -> dict[str, Any]:
    return dict(await (await client.get(f"/api/jobs/{job_id}", headers=auth)).json())


def _gen(version: int, **kw: Any) -> dict[str, Any]:
    job = {"model_version_id": version, "prompt": "a red fox", "negative_prompt": "blurry"}
    job.update({"seed": 42, "steps": 2, "width": 64, "height": 64, "sampler": "Euler", **kw})
    return job


async def test_generation_with_an_in_process_worker(
    live: TestClient, node: Node, alice: User, bob: User, base: Version, tiny: Any, tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {await node.accounts.create_token(alice.name)}"}
    first = await _submit(live, auth, _gen(base.id, count=2))
    worker = await _in_process_worker(
        node, live, tmp_path, tiny, bob, torrent=True, node_worker=True
    )
    assert await asyncio.wait_for(worker.run(), 60) == 0
    done = await _job(live, auth, first["id"])
    assert done["state"] == "done", done
    assert worker.cache.sources == {base.sha256: "bittorrent"}  # the node's web seed, by BEP 19
    gallery = await (
        await live.get(f"/api/v1/images?modelVersionId={base.id}&withMeta=true")
    ).json()
    assert gallery["items"] == []  # private to alice until she publishes them
    published = await _publish_images(live, auth, done)
    gallery = await (
        await live.get(f"/api/v1/images?modelVersionId={base.id}&withMeta=true")
    ).json()
    assert len(gallery["items"]) == 2
    item = next(i for i in gallery["items"] if i["id"] == published[0]["image_id"])
    meta = item["meta"]
    assert (meta["prompt"], meta["negativePrompt"], meta["seed"]) == ("a red fox", "blurry", 42)
    assert (meta["steps"], meta["sampler"], meta["Size"]) == (2, "Euler", "64x64")
    assert meta["Model hash"].upper() == base.sha256[:10]
    image = await live.get(done["results"][0]["url"], headers=auth)
    assert Image.open(io.BytesIO(await image.read())).size == (64, 64)

    # the same seed again, on the same machine: the same bytes
    again = await _submit(live, auth, _gen(base.id, count=1))
    assert await asyncio.wait_for(worker.run(), 60) == 0
    repeat = await _job(live, auth, again["id"])
    assert repeat["results"][0]["sha256"] == done["results"][0]["sha256"]


async def test_training_makes_a_lora_that_changes_the_output(
    live: TestClient, node: Node, alice: User, base: Version, tiny: Any, tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {await node.accounts.create_token(alice.name)}"}
    form = FormData()
    params = {
        "kind": "train",
        "model_version_id": base.id,
        "name": "Fox style",
        "trigger_word": "foxstyle",
        "steps": 4,
        "rank": 4,
        "learning_rate": "0.05",
        "resolution": 64,
        "seed": 1,
        "captions": {"a.png": "foxstyle, a red square", "b.png": "foxstyle, a blue square"},
    }
    form.add_field("params", json.dumps(params), content_type="application/json")
    for name, colour in (("a.png", (220, 30, 30)), ("b.png", (30, 30, 220))):
        out = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(out, "PNG")
        form.add_field("image", out.getvalue(), filename=name, content_type="image/png")
    resp = await live.post("/api/jobs", data=form, headers=auth)
    assert resp.status == 201, await resp.text()
    job = await resp.json()
    worker = await _in_process_worker(node, live, tmp_path, tiny, alice)
    assert await asyncio.wait_for(worker.run(), 90) == 0
    done = await _job(live, auth, job["id"])
    assert done["state"] == "done", done
    assert done["progress"].get("step") and "loss" in done["progress"]

    page = await (await live.get(f"/jobs/{job['id']}", headers=auth)).text()
    assert "Publish this LoRA" in page
    resp = await live.post(
        f"/jobs/{job['id']}/publish",
        data={"name": "Fox style"},
        headers=auth,
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    published = (await _job(live, auth, job["id"]))["results"][0]["published"]
    assert resp.headers["Location"] == f"/models/{published['model_id']}"
    again = await live.post(f"/api/jobs/{job['id']}/publish", json={}, headers=auth)
    assert again.status == 409  # a draft is published once
    lora_version = published["model_version_id"]
    version = await (await live.get(f"/api/v1/model-versions/{lora_version}")).json()
    assert version["model"]["type"] == "LORA" and version["trainedWords"] == ["foxstyle"]
    lora_file = await (await live.get(f"/api/download/models/{lora_version}")).read()
    from safetensors import safe_open

    path = tmp_path / "lora.safetensors"
    path.write_bytes(lora_file)
    with safe_open(str(path), "np") as handle:
        assert handle.metadata()["ss_new_sd_model_hash"] == base.sha256.lower()

    plain = await _submit(live, auth, _gen(base.id))
    styled = await _submit(
        live, auth, _gen(base.id, loras=[{"model_version_id": lora_version, "weight": "1"}])
    )
    for _ in range(2):
        assert await asyncio.wait_for(worker.run(), 60) == 0
    a, b = await _job(live, auth, plain["id"]), await _job(live, auth, styled["id"])
    assert a["state"] == b["state"] == "done", (a, b)
    assert a["results"][0]["sha256"] != b["results"][0]["sha256"]
    (styled_image,) = await _publish_images(live, auth, b)
    gallery = await (
        await live.get(f"/api/v1/images?modelVersionId={base.id}&withMeta=true")
    ).json()
    styled_meta = next(i for i in gallery["items"] if i["id"] == styled_image["image_id"])
    assert [r["type"] for r in styled_meta["meta"]["resources"]][:1] == ["lora"]


def _worker_command(url: str, tmp_path: Path, tiny: Any, name: str, token: str) -> list[str]:
    return [
        str(Path(sys.executable).parent / "civitas"),
        "worker",
        "--node",
        url,
        "--once",
        "--poll",
        "0.2",
        "--threads",
        "1",
        "--key",
        str(tmp_path / f"{name}.key"),
        "--cache",
        str(tmp_path / f"{name}-cache"),
        "--config-root",
        str(tiny.config_root),
        "--token",
        token,
        "--name",
        name,
        "--no-torrent",
    ]


async def test_a_worker_process_and_a_killed_one(
    live: TestClient, node: Node, alice: User, base: Version, tiny: Any, tmp_path: Path
) -> None:
    """A `civitas worker` process starts a long job and is killed mid-way; its lease
    expires, the job is requeued, and another worker (in-process) finishes it."""
    auth = {"Authorization": f"Bearer {await node.accounts.create_token(alice.name)}"}
    job = await _submit(live, auth, _gen(base.id, steps=100, count=2))
    url = str(live.make_url("")).rstrip("/")
    token = await node.accounts.create_token(alice.name)  # alice's own workers, her job
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path.cwd())}

    proc = await asyncio.create_subprocess_exec(
        *_worker_command(url, tmp_path, tiny, "doomed", token),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        for _ in range(600):
            shown = await _job(live, auth, job["id"])
            if shown["state"] == "running" and shown["progress"].get("step"):
                break
            assert proc.returncode is None, (await proc.stdout.read()).decode()  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the worker never started the job: {shown}")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert (await _job(live, auth, job["id"]))["state"] == "running"
    assert (tmp_path / "doomed.key").stat().st_mode & 0o777 == 0o600  # made on its first run
    for _ in range(100):  # the lease lapses; the reaper requeues the job
        shown = await _job(live, auth, job["id"])
        if shown["state"] == "queued":
            break
        await asyncio.sleep(0.1)
    assert (shown["state"], shown["failures"]) == ("queued", 1), shown

    rescuer = await _in_process_worker(node, live, tmp_path, tiny, alice, "rescuer")
    assert await asyncio.wait_for(rescuer.run(), 60) == 0
    done = await _job(live, auth, job["id"])
    assert done["state"] == "done" and done["attempts"] == 2, done
    workers = await (
        await live.get("/api/compute/workers", headers={"Authorization": f"Bearer {token}"})
    ).json()
    by_name = {w["name"]: w for w in workers["workers"]}
    assert by_name["rescuer"]["jobs_done"] == 1 and by_name["doomed"]["jobs_done"] == 0
    assert done["worker"] == by_name["rescuer"]["did"]
    image = await live.get(done["results"][1]["url"], headers=auth)
    assert hashlib.sha256(await image.read()).hexdigest().upper() == done["results"][1]["sha256"]


async def test_an_unregistered_worker_without_a_token_stops_and_says_why(
    live: TestClient, tmp_path: Path, tiny: Any
) -> None:
    from node.errors import CivitasError

    worker = Worker(_options(live, tmp_path, tiny, "stranger"), SigningKey.generate())
    with pytest.raises(CivitasError, match="not registered on this node"):
        await asyncio.wait_for(worker.run(), 10)
    worker.close()
