"""The compute HTTP API: users' jobs, signed worker routes, verified results.

The GPU is the one thing faked here: a "worker" makes the PNGs the job asks for with the
real ``parameters`` writer and plain pixels, and submits them through the real routes.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient

from node.accounts.service import User
from node.app import Node
from node.compute.requests import expected_parameters
from node.p2p.keys import SigningKey
from tests.compute.conftest import Signer, Version, generate
from tests.compute.fake_worker import (
    deliver,
    make_node_worker,
    png,
    register,
    token,
    upload,
)


async def test_generation_end_to_end_through_the_api(
    client: TestClient,
    node: Node,
    alice: User,
    bob: User,
    checkpoint: Version,
    worker_key: SigningKey,
) -> None:
    alice_auth = await token(node, alice)
    resp = await client.post("/api/jobs", json=generate(checkpoint.id, count=2), headers=alice_auth)
    assert resp.status == 201, await resp.text()
    job = await resp.json()
    assert (job["state"], job["position"]) == ("queued", 1)

    signer = await register(client, node, bob, worker_key)
    workers = await (
        await client.get("/api/compute/workers", headers=await token(node, bob))
    ).json()
    assert [w["name"] for w in workers["workers"]] == ["gpu-1"]
    # bob's worker serves only bob's jobs until an admin makes it a node worker
    idle = await (await signer.request("POST", "/api/compute/pop", {})).json()
    assert idle["job"] is None and "none of your own" in idle["reason"]
    await make_node_worker(client, node, worker_key)

    lease = await (await signer.request("POST", "/api/compute/pop", {})).json()
    assert lease["job"]["id"] == job["id"]
    assert lease["job"]["files"][0]["sha256"] == checkpoint.sha256
    progress = await signer.request(
        "POST", f"/api/compute/jobs/{job['id']}/progress", {"step": 1, "total": 2}
    )
    assert progress.status == 200
    shown = await (await client.get(f"/api/jobs/{job['id']}", headers=alice_auth)).json()
    assert (shown["state"], shown["progress"]) == ("running", {"step": 1, "total": 2})

    texts = expected_parameters(lease["job"])
    images = [png(text, shade=i * 40) for i, text in enumerate(texts)]
    resp = await deliver(signer, job["id"], images, worker_key)
    assert resp.status == 200, await resp.text()
    done = await (await client.get(f"/api/jobs/{job['id']}", headers=alice_auth)).json()
    assert done["state"] == "done" and done["worker"] == worker_key.did
    assert [r["seed"] for r in done["results"]] == [7, 8]
    # private to alice until she publishes: nothing in the gallery, nothing signed
    gallery_url = f"/api/v1/images?modelVersionId={checkpoint.id}&withMeta=true"
    assert (await (await client.get(gallery_url)).json())["items"] == []
    assert [r["published"] for r in done["results"]] == [None, None]
    seen = await client.get(done["results"][0]["url"], headers=alice_auth)
    assert seen.status == 200 and await seen.read() == images[0]
    published = []
    for r in done["results"]:
        resp = await client.post(
            f"/api/jobs/{job['id']}/outputs/{r['sha256']}/publish", json={}, headers=alice_auth
        )
        assert resp.status == 201, await resp.text()
        published.append(await resp.json())

    gallery = await (await client.get(gallery_url)).json()
    metas = {item["id"]: item for item in gallery["items"]}
    first = metas[published[0]["image_id"]]
    assert first["meta"]["prompt"] == "a fox"
    assert first["meta"]["seed"] == 7
    assert first["meta"]["Model hash"].upper() == checkpoint.sha256[:10]
    assert first["civitas"]["author"] == alice.did  # the requester, not the worker
    stats = await (await client.get("/api/compute/workers", headers=await token(node, bob))).json()
    assert stats["workers"][0]["jobs_done"] == 1 and stats["workers"][0]["outputs"] == 2


async def test_bad_requests_are_clear_json_errors(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    auth = await token(node, alice)
    cases = [
        (generate(999_999), 404, "no model version 999999"),
        (generate(checkpoint.id, width=2048, height=2048, count=4), 400, "compute.max_pixels"),
        (generate(checkpoint.id, steps=-3), 400, "'steps' must be from 1"),
    ]
    for body, status, message in cases:
        resp = await client.post("/api/jobs", json=body, headers=auth)
        assert resp.status == status
        error = await resp.json()
        assert message in error["message"] and error["error"]
    anonymous = await client.post("/api/jobs", json=generate(checkpoint.id))
    assert anonymous.status == 401


async def test_worker_routes_need_a_registered_signed_worker(
    client: TestClient, node: Node, alice: User, checkpoint: Version, worker_key: SigningKey
) -> None:
    unsigned = await client.post("/api/compute/pop", json={})
    assert unsigned.status == 401
    stranger = Signer(client, worker_key, node.node_key.did)
    resp = await stranger.request("POST", "/api/compute/pop", {})
    assert resp.status == 401 and "not registered" in (await resp.json())["message"]
    # a registration must be signed by the key it registers
    body = json.dumps({"name": "x"}).encode()
    resp = await client.post(
        "/api/compute/workers",
        data=body,
        headers={**await token(node, alice), "Content-Type": "application/json"},
    )
    assert resp.status == 401


async def test_results_are_verified_before_anything_is_kept(
    client: TestClient,
    node: Node,
    alice: User,
    bob: User,
    checkpoint: Version,
    worker_key: SigningKey,
) -> None:
    auth = await token(node, alice)
    job = await (await client.post("/api/jobs", json=generate(checkpoint.id), headers=auth)).json()
    holder = await register(client, node, bob, worker_key)
    await make_node_worker(client, node, worker_key)
    other_key = SigningKey.from_seed(b"o" * 32)
    other = await register(client, node, bob, other_key)
    lease = (await (await holder.request("POST", "/api/compute/pop", {})).json())["job"]
    good = png(expected_parameters(lease)[0])

    # a worker that does not hold the job (another worker does): refused before the body
    resp = await upload(other, job["id"], good)
    assert resp.status == 403 and "you do not hold" in (await resp.json())["message"]
    resp = await deliver(holder, job["id"], [good], other_key)  # signed by the wrong key
    assert resp.status == 403 and "attestation" in (await resp.json())["message"]
    # bytes that do not match the path's SHA256
    path = f"/api/compute/jobs/{job['id']}/outputs/{'0' * 64}"
    from node.compute.auth import sign_digest

    signed_for_other_bytes = sign_digest(
        worker_key, "PUT", path, hashlib.sha256(good).hexdigest(), node.node_key.did
    )
    resp = await client.put(path, data=good, headers=signed_for_other_bytes)
    assert resp.status == 401  # the signature covers the SHA256 in the path
    headers = sign_digest(worker_key, "PUT", path, "0" * 64, node.node_key.did)
    resp = await client.put(path, data=good, headers=headers)
    assert resp.status == 400 and "do not hash" in (await resp.json())["message"]
    # a corrupt image, a wrong seed, a wrong size
    corrupt = good[:100] + b"\0" * 50 + good[150:]
    resp = await deliver(holder, job["id"], [corrupt], worker_key)
    assert resp.status in (400, 415) and (await resp.json())["error"].startswith("image")
    wrong_seed = png(expected_parameters({**lease, "params": {**lease["params"], "seed": 8}})[0])
    resp = await deliver(holder, job["id"], [wrong_seed], worker_key)
    assert resp.status == 400 and "'parameters' do not match" in (await resp.json())["message"]
    resp = await deliver(
        holder, job["id"], [png(expected_parameters(lease)[0], side=72)], worker_key
    )
    assert resp.status == 400 and "asked for 64x64" in (await resp.json())["message"]
    resp = await deliver(holder, job["id"], [good, good], worker_key)
    assert resp.status == 400
    gallery = await (await client.get(f"/api/v1/images?modelVersionId={checkpoint.id}")).json()
    assert gallery["items"] == []
    assert (await deliver(holder, job["id"], [good], worker_key)).status == 200
    # once done, nobody holds it
    again = await upload(holder, job["id"], good)
    assert again.status == 409


async def test_cancel_and_events(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    auth = await token(node, alice)
    job = await (await client.post("/api/jobs", json=generate(checkpoint.id), headers=auth)).json()
    listed = await (await client.get("/api/jobs", headers=auth)).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    resp = await client.post(f"/api/jobs/{job['id']}/cancel", headers=auth)
    assert (await resp.json())["state"] == "cancelled"
    async with client.get(f"/api/jobs/{job['id']}/events", headers=auth) as events:
        assert events.headers["Content-Type"] == "text/event-stream"
        text = (await events.read()).decode()
    assert json.loads(text.split("data: ", 1)[1])["state"] == "cancelled"


async def test_training_upload_takes_images_and_a_zip(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    import zipfile

    auth = await token(node, alice)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("b.png", png("x", shade=50))
        z.writestr("b.txt", "fox in snow")
    form = FormData()
    params = {
        "kind": "train",
        "model_version_id": checkpoint.id,
        "trigger_word": "foxy",
        "steps": 2,
        "resolution": 64,
        "captions": {"a.png": "a red fox"},
    }
    form.add_field("params", json.dumps(params), content_type="application/json")
    form.add_field("image", png("y", shade=10), filename="a.png", content_type="image/png")
    form.add_field("zip", archive.getvalue(), filename="set.zip", content_type="application/zip")
    resp = await client.post("/api/jobs", data=form, headers=auth)
    assert resp.status == 201, await resp.text()
    job = await resp.json()
    assert job["kind"] == "train" and job["params"]["trigger_word"] == "foxy"
    key = SigningKey.from_seed(b"t" * 32)
    signer = await register(client, node, alice, key, kinds=["train"])
    lease = (await (await signer.request("POST", "/api/compute/pop", {})).json())["job"]
    assert [(i["name"], i["caption"]) for i in lease["inputs"]] == [
        ("a.png", "a red fox"),
        ("b.png", "fox in snow"),
    ]
    first = lease["inputs"][0]["sha256"]
    resp = await signer.request("GET", f"/api/compute/jobs/{job['id']}/inputs/{first}")
    assert resp.status == 200
    assert hashlib.sha256(await resp.read()).hexdigest().upper() == first


async def test_generate_page_queues_a_job_and_shows_it(
    client: TestClient, node: Node, alice: User, checkpoint: Version
) -> None:
    auth = await token(node, alice)
    page = await client.get(f"/generate?version={checkpoint.id}", headers=auth)
    assert page.status == 200 and f'value="{checkpoint.id}"' in await page.text()
    form = {"model_version_id": str(checkpoint.id), "prompt": "a fox", "steps": "4"}
    form |= {"width": "64", "height": "64", "count": "1", "seed": "", "cfg_scale": "6.5"}
    resp = await client.post("/generate", data=form, headers=auth, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    job_page = await client.get(resp.headers["Location"], headers=auth)
    text = await job_page.text()
    assert job_page.status == 200 and "queued" in text and "#1 in the queue" in text
    bad = await client.post("/generate", data={**form, "steps": "0"}, headers=auth)
    assert bad.status == 400 and "&#39;steps&#39; must be from 1" in await bad.text()
    assert (await client.get("/generate", allow_redirects=False)).status == 303  # log in first


def test_the_node_never_imports_torch() -> None:
    """A node without the compute extra serves everything else: nothing heavy at import."""
    import subprocess
    import sys

    code = (
        "import sys, node.app, node.cli, node.compute.results, node.compute.lora_check\n"
        "heavy = [m for m in ('torch', 'diffusers', 'peft', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_worker_without_torch_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from node.compute import pipelines
    from node.compute.worker import WorkerOptions, run_worker
    from node.errors import CivitasError

    monkeypatch.setattr(pipelines.importlib.util, "find_spec", lambda name: None)
    options = WorkerOptions(["http://127.0.0.1:1"], tmp_path / "k", tmp_path / "c", tmp_path)
    with pytest.raises(
        CivitasError, match=r"torch, diffusers, transformers, peft are not installed"
    ):
        run_worker(options)
    assert not (tmp_path / "k").exists()


async def test_a_failed_attempt_leaves_no_uploads_behind(
    client: TestClient, node: Node, alice: User, checkpoint: Version, worker_key: SigningKey
) -> None:
    auth = await token(node, alice)
    job = await (await client.post("/api/jobs", json=generate(checkpoint.id), headers=auth)).json()
    signer = await register(client, node, alice, worker_key)
    lease = (await (await signer.request("POST", "/api/compute/pop", {})).json())["job"]
    assert (await upload(signer, job["id"], png(expected_parameters(lease)[0]))).status == 201
    assert node.compute.desk.job_dir(job["id"]).is_dir()
    resp = await signer.request("POST", f"/api/compute/jobs/{job['id']}/fail", {"error": "OOM"})
    assert (await resp.json())["state"] == "queued"
    assert not node.compute.desk.job_dir(job["id"]).exists()
    shown = await (await client.get(f"/api/jobs/{job['id']}", headers=auth)).json()
    assert shown["state"] == "queued" and "OOM" in shown["error"]


def test_records_carry_attestations_that_every_node_checks() -> None:
    from node.catalog.schemas import check_image
    from node.errors import RecordRejected

    key = SigningKey.from_seed(b"k" * 32)
    sha = hashlib.sha256(b"an image").digest()
    body: dict[str, Any] = {"sha256": sha, "width": 8, "height": 8, "size": 8}
    body |= {"mime": "image/png", "attestation": {"worker": key.did, "sig": b"\0" * 64}}
    with pytest.raises(RecordRejected, match="attestation does not verify"):
        check_image(body)
    body["attestation"]["sig"] = key.sign(b"civitas-attestation-v1\0" + sha)
    check_image(body)
    body["attestation"]["worker"] = "did:key:nonsense"
    with pytest.raises(RecordRejected, match="attestation"):
        check_image(body)
