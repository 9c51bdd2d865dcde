"""Model type, base model, precision and size from tensor names, shapes and metadata.

Headers are built with the real key names of each format and tiny shapes whose telling
dimension is real (the 768/1024/2048 context width, the 1280-wide CLIP-G embedding), and
go through the strict header parser, so every case is a valid safetensors header.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from node.catalog.detect import BASE_MODELS, MODEL_TYPES, Detection, detect
from node.catalog.safetensors import DTYPE_BITS, SafetensorsHeader, parse_header

Spec = dict[str, Any]  # name -> shape, or name -> (dtype, shape)


def header(
    spec: Spec, metadata: dict[str, str] | None = None, dtype: str = "F16"
) -> SafetensorsHeader:
    """A validated header for tensors ``name -> shape`` (or ``(dtype, shape)``)."""
    entries: dict[str, Any] = {}
    offset = 0
    for name, value in spec.items():
        kind, shape = value if value and isinstance(value[0], str) else (dtype, value)
        size = math.prod(shape) * DTYPE_BITS[kind] // 8
        entries[name] = {
            "dtype": kind,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    if metadata is not None:
        entries["__metadata__"] = metadata
    raw = json.dumps(entries).encode()
    return parse_header(raw, 8 + len(raw) + offset)


def run(spec: Spec, metadata: dict[str, str] | None = None, dtype: str = "F16") -> Detection:
    return detect(header(spec, metadata, dtype))


UNET = "model.diffusion_model."
CONV_IN = {UNET + "input_blocks.0.0.weight": (4, 4, 3, 3)}


def unet(context: int, block: int = 1) -> Spec:
    key = f"{UNET}input_blocks.{block}.1.transformer_blocks.0.attn2.to_k.weight"
    return {**CONV_IN, key: (4, context)}


def kohya(module: str, width: int, conv: tuple[int, ...] = ()) -> Spec:
    return {
        f"{module}.lora_down.weight": (4, width, *conv),
        f"{module}.lora_up.weight": (8, 4, *((1, 1) if conv else ())),
        f"{module}.alpha": (),
    }


SD1_ATTN = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
SDXL_ATTN = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
TE_Q = "text_model_encoder_layers_0_self_attn_q_proj"
VAE = {
    "encoder.conv_in.weight": (8, 3, 3, 3),
    "decoder.conv_out.weight": (3, 8, 3, 3),
    "quant_conv.weight": (8, 8, 1, 1),
    "post_quant_conv.weight": (4, 4, 1, 1),
}

CASES: list[tuple[str, Spec, str | None, str | None]] = [
    # checkpoints: UNet context width, SDXL's second text encoder, SD3 joint blocks, Flux
    ("sd1 checkpoint", unet(768), "Checkpoint", "SD 1.5"),
    ("sd2 checkpoint", unet(1024), "Checkpoint", "SD 2.1"),
    (
        "sdxl checkpoint",
        {**unet(2048, 4), UNET + "label_emb.0.0.weight": (4, 2816)},
        "Checkpoint",
        "SDXL 1.0",
    ),
    (
        "sdxl by its text encoder",
        {**CONV_IN, "conditioner.embedders.1.model.ln_final.weight": (4,)},
        "Checkpoint",
        "SDXL 1.0",
    ),
    (
        "sd3 medium",
        {f"{UNET}joint_blocks.{i}.context_block.attn.qkv.weight": (4, 4) for i in range(24)},
        "Checkpoint",
        "SD 3",
    ),
    (
        "sd3.5 large",
        {f"{UNET}joint_blocks.{i}.x_block.attn.qkv.weight": (4, 4) for i in range(38)},
        "Checkpoint",
        "SD 3.5",
    ),
    (
        "sd3.5 medium",
        {f"{UNET}joint_blocks.0.x_block.attn2.qkv.weight": (4, 4)},
        "Checkpoint",
        "SD 3.5",
    ),
    (
        "flux dev",
        {
            UNET + "double_blocks.0.img_attn.norm.key_norm.scale": (4,),
            UNET + "guidance_in.in_layer.weight": (4, 4),
        },
        "Checkpoint",
        "Flux.1 D",
    ),
    (
        "bare flux dev unet",
        {"double_blocks.0.img_attn.qkv.weight": (4, 4), "guidance_in.in_layer.weight": (4, 4)},
        "Checkpoint",
        "Flux.1 D",
    ),
    (
        "flux schnell",
        {"double_blocks.0.img_attn.qkv.weight": (4, 4), "single_blocks.0.linear1.weight": (4, 4)},
        "Checkpoint",
        "Flux.1 S",
    ),
    # LoRA: kohya and diffusers names; base by context width, text encoder width, names
    (
        "kohya sd1 lora",
        {
            **kohya(SD1_ATTN, 768),
            **kohya("lora_unet_down_blocks_0_attentions_0_proj_in", 320, (1, 1)),
        },
        "LORA",
        "SD 1.5",
    ),
    ("kohya sd2 text encoder lora", kohya(f"lora_te_{TE_Q}", 1024), "LORA", "SD 2.1"),
    ("kohya sd1 text encoder lora", kohya(f"lora_te_{TE_Q}", 768), "LORA", "SD 1.5"),
    ("kohya sdxl lora", kohya(SDXL_ATTN, 2048), "LORA", "SDXL 1.0"),
    (
        "kohya sdxl te2 lora",
        {**kohya(f"lora_te1_{TE_Q}", 768), **kohya(f"lora_te2_{TE_Q}", 1280)},
        "LORA",
        "SDXL 1.0",
    ),
    (
        "diffusers sd1 lora",
        {
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (
                4,
                768,
            ),
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": (
                640,
                4,
            ),
        },
        "LORA",
        "SD 1.5",
    ),
    ("kohya flux lora", kohya("lora_unet_double_blocks_0_img_attn_qkv", 3072), "LORA", "Flux.1 D"),
    (
        "diffusers flux lora",
        {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (4, 64)},
        "LORA",
        "Flux.1 D",
    ),
    ("kohya sd3 lora", kohya("lora_unet_joint_blocks_0_x_block_attn_qkv", 1536), "LORA", "SD 3"),
    # LoCon: LoRA on 3x3 convs, or LyCORIS layouts
    (
        "locon conv",
        {**kohya(SD1_ATTN, 768), **kohya("lora_unet_down_blocks_0_resnets_0_conv1", 320, (3, 3))},
        "LoCon",
        "SD 1.5",
    ),
    (
        "loha",
        {f"{SDXL_ATTN}.hada_w1_a": (8, 4), f"{SDXL_ATTN}.hada_w1_b": (4, 2048)},
        "LoCon",
        "SDXL 1.0",
    ),
    # embeddings
    ("sd1 embedding", {"emb_params": (2, 768)}, "TextualInversion", "SD 1.5"),
    ("sd2 embedding", {"string_to_param.*": (1, 1024)}, "TextualInversion", "SD 2.1"),
    ("sdxl embedding", {"clip_l": (2, 768), "clip_g": (2, 1280)}, "TextualInversion", "SDXL 1.0"),
    # the rest
    ("vae", VAE, "VAE", None),
    (
        "vae with ema counters",
        {**VAE, "model_ema.decay": (), "model_ema.num_updates": ()},
        "VAE",
        None,
    ),
    (
        "sd1 controlnet",
        {
            "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
            "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (4, 768),
        },
        "Controlnet",
        "SD 1.5",
    ),
    (
        "sdxl diffusers controlnet",
        {
            "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (4, 2048),
        },
        "Controlnet",
        "SDXL 1.0",
    ),
    (
        "esrgan",
        {
            "conv_first.weight": (4, 3, 3, 3),
            "body.0.rdb1.conv1.weight": (4, 4, 3, 3),
            "conv_last.weight": (3, 4, 3, 3),
        },
        "Upscaler",
        None,
    ),
    (
        "old esrgan",
        {"model.0.weight": (4, 3, 3, 3), "model.1.sub.0.RDB1.conv1.0.weight": (4, 4, 3, 3)},
        "Upscaler",
        None,
    ),
    ("unknown", {"text_model.embeddings.token_embedding.weight": (4, 768)}, None, None),
    ("empty", {}, None, None),
]


@pytest.mark.parametrize(
    ("spec", "model_type", "base"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_model_type_and_base_from_tensors(
    spec: Spec, model_type: str | None, base: str | None
) -> None:
    found = run(spec)
    assert (found.model_type, found.base_model) == (model_type, base)
    assert found.model_type is None or found.model_type in MODEL_TYPES
    assert found.base_model is None or found.base_model in BASE_MODELS


def test_locon_stated_by_the_network_module() -> None:
    metadata = {"ss_network_module": "lycoris.kohya"}
    assert run(kohya(SD1_ATTN, 768), metadata).model_type == "LoCon"
    assert run(kohya(SD1_ATTN, 768), {"ss_network_module": "networks.lora"}).model_type == "LORA"


def test_checkpoint_size_is_full_only_with_ema_weights() -> None:
    assert run(unet(768)).size == "pruned"
    ema = {**unet(768), "model_ema.diffusion_modelinput_blocks00weight": (4, 4, 3, 3)}
    assert run(ema).size == "full"
    counters = {**unet(768), "model_ema.decay": (), "model_ema.num_updates": ()}
    assert run(counters).size == "pruned"
    assert run(kohya(SD1_ATTN, 768)).size is None
    assert run(VAE).size is None


@pytest.mark.parametrize(
    ("dtype", "precision"),
    [("F16", "fp16"), ("BF16", "bf16"), ("F32", "fp32"), ("F8_E4M3", "fp8"), ("F8_E5M2", "fp8")],
)
def test_precision_is_the_dominant_float_format(dtype: str, precision: str) -> None:
    assert run(unet(768), dtype=dtype).precision == precision


def test_precision_is_counted_in_bytes_not_tensors() -> None:
    mostly_fp16 = {"a": ("F32", (2,)), "b": ("F32", (2,)), "big": ("F16", (64,))}
    assert run(mostly_fp16).precision == "fp16"
    mostly_fp32 = {"a": ("F16", (2,)), "b": ("F16", (2,)), "big": ("F32", (64,))}
    assert run(mostly_fp32).precision == "fp32"
    fp8_with_scales = {"w": ("F8_E4M3", (64,)), "scale": ("F32", (1,)), "step": ("I64", (8,))}
    assert run(fp8_with_scales).precision == "fp8"
    assert run({"ids": ("I64", (4,))}).precision is None
    assert run({}).precision is None


AMBIGUOUS_LORA = kohya("lora_unet_some_block", 64)


@pytest.mark.parametrize(
    ("metadata", "base"),
    [
        ({"ss_base_model_version": "sdxl_base_v1-0"}, "SDXL 1.0"),
        ({"ss_base_model_version": "sd_v1"}, "SD 1.5"),
        ({"ss_base_model_version": "sd_v2_v"}, "SD 2.1"),
        ({"ss_base_model_version": "sd3_m"}, "SD 3"),
        ({"ss_base_model_version": "flux1"}, "Flux.1 D"),
        ({"modelspec.architecture": "stable-diffusion-v1/lora"}, "SD 1.5"),
        ({"modelspec.architecture": "stable-diffusion-v2-768-v/lora"}, "SD 2.1"),
        ({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "SDXL 1.0"),
        ({"modelspec.architecture": "stable-diffusion-3-5-large/lora"}, "SD 3.5"),
        ({"modelspec.architecture": "stable-diffusion-3-m/lora"}, "SD 3"),
        ({"modelspec.architecture": "flux-1-dev/lora"}, "Flux.1 D"),
        ({"modelspec.architecture": "flux-1-schnell/lora"}, "Flux.1 S"),
        ({"ss_sd_model_name": "ponyDiffusionV6XL_v6StartWithThisOne.safetensors"}, "Pony"),
        ({"ss_sd_model_name": "v1-5-pruned-emaonly.safetensors"}, "SD 1.5"),
        ({"ss_sd_model_name": "sd_xl_base_1.0.safetensors"}, "SDXL 1.0"),
        ({"ss_v2": "True"}, "SD 2.1"),
        ({"ss_v2": "False", "ss_sd_model_name": "v2-1_768-ema-pruned.ckpt"}, "SD 2.1"),
        ({"ss_sd_model_name": "runwayml/stable-diffusion-v1-5"}, "SD 1.5"),
        ({"ss_sd_model_name": "black-forest-labs/FLUX.1-dev"}, "Flux.1 D"),
        ({"ss_sd_model_name": "dreamshaper_v21.safetensors"}, None),
        ({"ss_sd_model_name": "my-merge.safetensors"}, None),
        ({}, None),
    ],
)
def test_base_model_stated_in_metadata(metadata: dict[str, str], base: str | None) -> None:
    found = run(AMBIGUOUS_LORA, metadata)
    assert (found.model_type, found.base_model) == ("LORA", base)


def test_metadata_refines_the_family_the_tensors_show_but_cannot_leave_it() -> None:
    pony = {"ss_sd_model_name": "ponyDiffusionV6XL.safetensors"}
    assert run(kohya(SDXL_ATTN, 2048), pony).base_model == "Pony"
    assert run(kohya(SD1_ATTN, 768), pony).base_model == "SD 1.5"
    assert run(kohya(SD1_ATTN, 768), {"ss_base_model_version": "sdxl_base_v1-0"}).base_model == (
        "SD 1.5"
    )
    schnell = {"modelspec.architecture": "flux-1-schnell/lora"}
    flux_lora = kohya("lora_unet_double_blocks_0_img_attn_qkv", 3072)
    assert run(flux_lora, schnell).base_model == "Flux.1 S"
    sd35 = {"modelspec.architecture": "stable-diffusion-3-5-large/lora"}
    assert run(kohya("lora_unet_joint_blocks_0_x_block_attn_qkv", 1536), sd35).base_model == (
        "SD 3.5"
    )


def test_training_metadata_is_kept_verbatim() -> None:
    metadata = {
        "ss_network_dim": "32",
        "ss_tag_frequency": '{"set": {"a cat": 3}}',
        "modelspec.title": "Cats",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "format": "pt",
        "sshs_model_hash": "abc",
    }
    training = run(kohya(SD1_ATTN, 768), metadata).training
    assert training == {k: v for k, v in metadata.items() if k not in ("format", "sshs_model_hash")}
