"""Catalog fixtures: small real safetensors files and preview images, made by the tests."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from safetensors.numpy import save_file

from node.accounts.service import User
from node.app import Node
from tests.catalog.civitai_catalog import catalog  # noqa: F401  (a fixture)

PASSWORD = "correct horse battery"

A1111 = (
    "a watercolor fox in a forest, <lora:foxstyle:0.8>\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1234, Size: 512x512, "
    "Model hash: 0123456789, Model: base15"
)


def lora_file(path: Path, seed: int = 0, *, rank: int = 4, sdxl: bool = False) -> Path:
    """A small kohya-style LoRA: text encoder and UNet down/up pairs, fp16."""
    rng = np.random.default_rng(seed)
    hidden = 768
    tensors = {
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": rng.standard_normal(
            (rank, hidden), dtype=np.float32
        ).astype(np.float16),
        "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": rng.standard_normal(
            (3072, rank), dtype=np.float32
        ).astype(np.float16),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": rng.standard_normal(
            (rank, 320), dtype=np.float32
        ).astype(np.float16),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": rng.standard_normal(
            (320, rank), dtype=np.float32
        ).astype(np.float16),
    }
    metadata = {
        "ss_network_module": "networks.lora",
        "ss_base_model_version": "sdxl_base_v1-0" if sdxl else "sd_v1",
        "ss_output_name": path.stem,
    }
    if sdxl:
        tensors["lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"] = (
            rng.standard_normal((rank, 1280), dtype=np.float32).astype(np.float16)
        )
    save_file(tensors, str(path), metadata=metadata)
    return path


def png_bytes(
    seed: int = 0, size: tuple[int, int] = (96, 64), parameters: str | None = A1111
) -> bytes:
    """A structured (not noise) PNG with an A1111 ``parameters`` chunk."""
    image = Image.new("RGB", size, (20 * seed % 255, 80, 160))
    for x in range(0, size[0], 8):
        for y in range(0, size[1], 8):
            if (x // 8 + y // 8 + seed) % 3 == 0:
                image.paste((240, 200 - seed * 10 % 200, 40), (x, y, x + 8, y + 8))
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


@pytest.fixture
async def alice(node: Node) -> User:
    return await node.accounts.add_user("alice", PASSWORD)


@pytest.fixture
def make_lora(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "fox.safetensors", seed: int = 0, **kw: object) -> Path:
        return lora_file(tmp_path / name, seed, **kw)  # type: ignore[arg-type]

    return make
