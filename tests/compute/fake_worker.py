"""A worker without a GPU: registers, and delivers the PNGs a job asks for with the real
``parameters`` writer and plain pixels, through the real signed routes."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Any

from aiohttp.test_utils import TestClient
from PIL import Image

from node.accounts.service import User
from node.app import Node
from node.catalog.schemas import attestation_message
from node.compute.auth import sign_digest
from node.compute.parameters import png_with_parameters
from node.p2p.federation.signing import sign_request
from node.p2p.keys import SigningKey
from tests.compute.conftest import Signer

TINY_PNG_SIDE = 64


async def token(node: Node, user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {await node.accounts.create_token(user.name)}"}


async def register(
    client: TestClient, node: Node, user: User, key: SigningKey, **data: Any
) -> Signer:
    signer = Signer(client, key, node.node_key.did)
    body = json.dumps({"name": "gpu-1", **data}).encode()
    headers = {
        **sign_request(key, "POST", "/api/compute/workers", body, node.node_key.did),
        **await token(node, user),
        "Content-Type": "application/json",
    }
    resp = await client.post("/api/compute/workers", data=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return signer


def png(text: str, side: int = TINY_PNG_SIDE, shade: int = 0) -> bytes:
    image = Image.new("RGB", (side, side), (shade, 120, 200))
    out = io.BytesIO()
    image.save(out, "PNG")
    return png_with_parameters(out.getvalue(), text)


def attest(key: SigningKey, data: bytes) -> str:
    sig = key.sign(attestation_message(hashlib.sha256(data).digest()))
    return base64.urlsafe_b64encode(sig).decode().rstrip("=")


async def upload(signer: Signer, job_id: int, data: bytes) -> Any:
    sha = hashlib.sha256(data).hexdigest().upper()
    path = f"/api/compute/jobs/{job_id}/outputs/{sha}"
    headers = sign_digest(
        signer.key, "PUT", path, hashlib.sha256(data).hexdigest(), signer.node_did
    )
    return await signer.client.put(path, data=data, headers=headers)


async def deliver(signer: Signer, job_id: int, outputs: list[bytes], key: SigningKey) -> Any:
    for data in outputs:
        assert (await upload(signer, job_id, data)).status == 201
    manifest = {
        "outputs": [
            {
                "sha256": hashlib.sha256(d).hexdigest().upper(),
                "size": len(d),
                "sig": attest(key, d),
            }
            for d in outputs
        ]
    }
    return await signer.request("POST", f"/api/compute/jobs/{job_id}/result", manifest)


async def make_node_worker(client: TestClient, node: Node, key: SigningKey) -> None:
    """An admin makes a member's worker a node worker: it then serves everyone's jobs."""
    admin = {"Authorization": f"Bearer {node.home.admin_token()}"}
    resp = await client.post(
        f"/api/compute/workers/{key.did}/serves", json={"serves": "all"}, headers=admin
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["serves"] == "all"
