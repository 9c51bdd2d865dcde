"""Checking a LoRA against its base from headers alone: hand-made files, then trained ones."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from node.catalog.safetensors import SafetensorsError, read_header
from node.compute.lora_check import base_modules, check_lora
from node.compute.tiny import TinyModel
from node.errors import BadRequest
from tests.compute.conftest import require_extra
from tests.compute.tiny_env import (  # noqa: F401  (pytest fixtures)
    TrainedLora,
    small_fixture,
    tiny_fixture,
    tiny_lora_fixture,
)

BASE_SHA = "5A" * 32
U = "model.diffusion_model."
# A miniature base in the original layout, two resnets per level (input block 3 is the
# first downsampler), with an SD 1.x CLIP and an SDXL OpenCLIP text encoder.
BASE_SHAPES: dict[str, tuple[int, ...]] = {
    U + "input_blocks.1.0.in_layers.2.weight": (8, 4, 3, 3),
    U + "input_blocks.3.0.op.weight": (8, 8, 3, 3),
    U + "input_blocks.4.1.proj_in.weight": (16, 16, 1, 1),
    U + "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight": (16, 16),
    U + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (16, 12),
    U + "middle_block.1.transformer_blocks.0.attn1.to_out.0.weight": (16, 16),
    U + "output_blocks.2.1.conv.weight": (8, 8, 3, 3),
    U + "output_blocks.5.1.transformer_blocks.0.attn1.to_v.weight": (16, 16),
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": (12, 12),
    "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": (36, 12),
    "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight": (48, 12),
    "first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3),
}
# kohya module -> (lora_down shape, lora_up shape), each fitting the base above
GOOD = {
    "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q": ((4, 16), (16, 4)),
    "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": ((4, 12), (16, 4)),
    "lora_unet_down_blocks_1_attentions_0_proj_in": ((4, 16, 1, 1), (16, 4, 1, 1)),
    "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_out_0": ((4, 16), (16, 4)),
    "lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn1_to_v": ((4, 16), (16, 4)),
    "lora_unet_down_blocks_0_resnets_0_conv1": ((4, 4, 3, 3), (8, 4, 1, 1)),
    "lora_unet_down_blocks_0_downsamplers_0_conv": ((4, 8, 3, 3), (8, 4, 1, 1)),
    "lora_unet_up_blocks_0_upsamplers_0_conv": ((4, 8, 3, 3), (8, 4, 1, 1)),
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": ((4, 12), (12, 4)),
    "lora_te2_text_model_encoder_layers_0_self_attn_v_proj": ((4, 12), (12, 4)),
    "lora_te2_text_model_encoder_layers_0_mlp_fc1": ((4, 12), (48, 4)),
}
Q = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    tensors = {k: np.zeros(shape, dtype=np.float16) for k, shape in BASE_SHAPES.items()}
    save_file(tensors, str(tmp_path / "base.safetensors"))
    return tmp_path / "base.safetensors"


def write_lora(
    path: Path,
    modules: dict[str, tuple[tuple[int, ...], tuple[int, ...]]],
    metadata: dict[str, str] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    tensors: dict[str, np.ndarray] = {}
    for name, (down, up) in modules.items():
        tensors[f"{name}.lora_down.weight"] = np.ones(down, dtype=np.float16)
        tensors[f"{name}.lora_up.weight"] = np.ones(up, dtype=np.float16)
        tensors[f"{name}.alpha"] = np.array(down[0], dtype=np.float16)
    tensors |= extra or {}
    stated = {"civitas_base_sha256": BASE_SHA, "ss_network_module": "networks.lora"}
    save_file(tensors, str(path), metadata=stated if metadata is None else metadata)
    return path


def test_accepts_every_naming_style(tmp_path: Path, base: Path) -> None:
    lora = write_lora(tmp_path / "good.safetensors", GOOD)
    check_lora(lora, base, BASE_SHA)
    check_lora(lora, read_header(base), BASE_SHA.lower())  # a header does as well as a path
    kohya = write_lora(tmp_path / "kohya.safetensors", GOOD, {"ss_new_sd_model_hash": BASE_SHA})
    check_lora(kohya, base, BASE_SHA)


def _with(name: str, down: tuple[int, ...], up: tuple[int, ...]) -> dict[str, Any]:
    return {**GOOD, name: (down, up)}


BAD_MODULES = [
    (_with("lora_unet_down_blocks_1_attentions_1_proj_in", (4, 16), (16, 4)), "does not exist"),
    (_with("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", (4, 12), (12, 4)), "exist"),
    (_with(Q, (4, 15), (16, 4)), "does not fit the base weight"),
    (_with(Q, (4, 16), (15, 4)), "does not fit the base weight"),
    (_with(Q, (4, 16), (16, 3)), "inconsistent shapes"),
    (_with(Q, (4, 16, 1), (16, 4)), "inconsistent shapes"),
    (_with("lora_unet_down_blocks_0_resnets_0_conv1", (4, 4, 1, 1), (8, 4, 1, 1)), "kernel"),
    (_with("lora_unet_down_blocks_0_resnets_0_conv1", (4, 4, 3, 3), (8, 4, 3, 3)), "kernel"),
]


@pytest.mark.parametrize(("modules", "words"), BAD_MODULES)
def test_refuses_modules_the_base_lacks(
    tmp_path: Path, base: Path, modules: dict[str, Any], words: str
) -> None:
    lora = write_lora(tmp_path / "bad.safetensors", modules)
    with pytest.raises(BadRequest, match=words):
        check_lora(lora, base, BASE_SHA)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({U + "input_blocks.1.0.in_layers.2.weight": np.ones(2)}, "not part of a kohya-format"),
        ({f"{Q}.lora_mid.weight": np.ones(2)}, "not part of a kohya-format"),
        ({f"{Q}.lora_down.weight": np.ones((4, 16), dtype=np.int8)}, "not a float"),
        ({f"{Q}.alpha": np.ones(2, dtype=np.float16)}, "not a scalar"),
    ],
)
def test_refuses_foreign_tensors(
    tmp_path: Path, base: Path, extra: dict[str, np.ndarray], words: str
) -> None:
    lora = write_lora(tmp_path / "bad.safetensors", GOOD, extra=extra)
    with pytest.raises(BadRequest, match=words):
        check_lora(lora, base, BASE_SHA)


def test_refuses_half_a_module(tmp_path: Path, base: Path) -> None:
    lora = tmp_path / "half.safetensors"
    save_file({f"{Q}.lora_down.weight": np.ones((4, 16), dtype=np.float16)}, str(lora))
    with pytest.raises(BadRequest, match="lacks its lora_down or lora_up"):
        check_lora(lora, base, BASE_SHA)


def test_refuses_a_file_without_lora_tensors(tmp_path: Path, base: Path) -> None:
    empty = tmp_path / "empty.safetensors"
    save_file({}, str(empty), metadata={"civitas_base_sha256": BASE_SHA})
    with pytest.raises(BadRequest, match="holds no LoRA tensors"):
        check_lora(empty, base, BASE_SHA)
    with pytest.raises(BadRequest, match="not part of a kohya-format LoRA"):
        check_lora(base, base, BASE_SHA)  # a checkpoint is not a LoRA


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ({}, "does not name its base checkpoint"),
        ({"civitas_base_sha256": "00" * 32}, "civitas_base_sha256 says it was trained on 0000"),
        ({"ss_new_sd_model_hash": "ff" * 32}, "ss_new_sd_model_hash says"),
        ({"civitas_base_sha256": BASE_SHA, "ss_new_sd_model_hash": "ff" * 32}, "ss_new_sd"),
    ],
)
def test_refuses_another_base_hash(
    tmp_path: Path, base: Path, metadata: dict[str, str], words: str
) -> None:
    lora = write_lora(tmp_path / "other.safetensors", GOOD, metadata)
    with pytest.raises(BadRequest, match=words):
        check_lora(lora, base, BASE_SHA)


def test_refuses_corrupt_files_and_folders(tmp_path: Path, base: Path) -> None:
    lora = write_lora(tmp_path / "good.safetensors", GOOD)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(lora.read_bytes()[:-3])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    for path in (truncated, garbage):
        with pytest.raises(SafetensorsError):
            check_lora(path, base, BASE_SHA)
    with pytest.raises(BadRequest, match="single-file checkpoint, not a folder"):
        check_lora(lora, tmp_path, BASE_SHA)


# --- trained on the tiny model (needs torch) -------------------------------------------


def _diffusers_names(folder: Path) -> dict[str, tuple[int, ...]]:
    """kohya names of the diffusers UNet and text encoder weights, with their shapes."""
    found = {}
    for part, prefix in (("unet", "lora_unet_"), ("text_encoder", "lora_te_text_model_")):
        for file in (folder / part).glob("*.safetensors"):
            for name, info in read_header(file).tensors.items():
                if name.endswith(".weight") and len(info.shape) >= 2:
                    stem = name.removesuffix(".weight").removeprefix("text_model.")
                    found[prefix + stem.replace(".", "_")] = info.shape
    return found


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_base_modules_agree_with_diffusers(size: str, request: pytest.FixtureRequest) -> None:
    """Every UNet and CLIP weight diffusers has is found in the original-layout file."""
    require_extra("torch")
    model: TinyModel = request.getfixturevalue(size)
    known = base_modules(read_header(model.checkpoint))
    expected = _diffusers_names(model.folder)
    assert len(expected) > 50
    assert {name: known.get(name) for name in expected} == expected


def test_accepts_the_trained_lora(tiny: TinyModel, tiny_lora: TrainedLora) -> None:
    check_lora(tiny_lora.path, tiny.checkpoint, tiny.sha256)
    check_lora(tiny_lora.path, tiny.checkpoint, tiny.sha256.lower())


def test_refuses_the_trained_lora_on_another_base(
    tiny: TinyModel, small: TinyModel, tiny_lora: TrainedLora, tmp_path: Path
) -> None:
    with pytest.raises(BadRequest, match="trained on"):
        check_lora(tiny_lora.path, small.checkpoint, small.sha256)
    with pytest.raises(BadRequest, match="does not fit the base weight"):
        check_lora(tiny_lora.path, small.checkpoint, tiny.sha256)  # right hash, wrong shapes
    with pytest.raises(BadRequest, match="trained on"):
        check_lora(tiny_lora.path, tiny.checkpoint, hashlib.sha256(b"other").hexdigest())
