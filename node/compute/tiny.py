"""A tiny, randomly initialised SD 1.x model, built offline, for tests and benchmarks.

It has the shape of diffusers' own fast-test pipelines (a two-level UNet with one
cross-attention level, a two-level VAE, a 5-layer CLIP text encoder with a byte-level
BPE tokenizer) and is written the way real models reach a node: as a single
``.safetensors`` checkpoint in the original Stable Diffusion (LDM) key layout, next to a
diffusers config folder that lets ``from_single_file`` load it without the Hub. Weights
come from a fixed torch seed, so the same seed gives the same file, byte for byte. The
checkpoint's ``modelspec.architecture`` says SD 1.x, which is how the catalog's detector
names its base (the tiny shapes themselves match no real base model).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_MODEL = "SD 1.5"
CONFIG_NAME = "sd-1.5"  # the config folder's name under a config root (pipelines.find_config)
_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_MERGES = (("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "n</w>"), ("i", "n"))


@dataclass(frozen=True)
class TinySize:
    """How big the random model is; ``TINY`` for tests, ``SMALL`` for benchmarks."""

    unet_channels: tuple[int, int]
    unet_heads: tuple[int, int]
    layers_per_block: int
    vae_channels: tuple[int, int]
    norm_groups: int
    text_hidden: int
    text_layers: int


TINY = TinySize((4, 8), (2, 4), 1, (4, 8), 2, 32, 5)
SMALL = TinySize((32, 64), (2, 4), 2, (32, 64), 32, 64, 5)
SIZES = {"tiny": TINY, "small": SMALL}


@dataclass(frozen=True)
class TinyModel:
    """Where :func:`write_tiny_model` put things, and the checkpoint's hashes."""

    checkpoint: Path  # single-file LDM checkpoint
    config_root: Path  # holds one config folder per base model, as pipelines expects
    config_dir: Path  # config_root / "sd-1.5": diffusers configs and tokenizer, no weights
    folder: Path  # the same pipeline as a diffusers folder, with weights
    sha256: str  # of the checkpoint, uppercase hex
    base_model: str = BASE_MODEL

    @property
    def autov2(self) -> str:
        return self.sha256[:10]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's printable stand-in character for each byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    chars = {b: chr(b) for b in keep}
    extra = 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = chr(256 + extra)
            extra += 1
    return dict(sorted(chars.items()))


def build_tokenizer() -> Any:
    """A CLIP tokenizer over the 256 byte symbols (bare and word-final) and a few merges."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in _MERGES)]
    vocab = {token: index for index, token in enumerate([*tokens, _BOS, _EOS])}
    merges: list[Any] = list(_MERGES)  # transformers 5 takes (left, right) pairs
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_pipeline(size: TinySize = TINY, seed: int = 0) -> Any:
    """The random pipeline in memory: each component seeded, so it is reproducible."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from diffusers import UNet2DConditionModel as UNet
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    unet = UNet(
        block_out_channels=size.unet_channels,
        layers_per_block=size.layers_per_block,
        attention_head_dim=size.unet_heads,
        cross_attention_dim=size.text_hidden,
        norm_num_groups=size.norm_groups,
        sample_size=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=size.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=size.norm_groups,
        sample_size=32,
    )
    torch.manual_seed(seed + 2)
    text_config = CLIPTextConfig(
        hidden_size=size.text_hidden,
        intermediate_size=size.text_hidden * 2,
        num_attention_heads=4,
        num_hidden_layers=size.text_layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text_encoder = CLIPTextModel(text_config)
    scheduler = PNDMScheduler(  # Stable Diffusion 1.5's own scheduler config
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# --- diffusers -> original Stable Diffusion (LDM) key names ------------------------------
# The inverse of diffusers' single-file conversion (loaders/single_file_utils.py) for the
# SD 1.x layouts built here; a key no rule names is an error, so nothing is dropped.

_UNET_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}
_UNET_FIXED = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_VAE_ATTENTION = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}
_VAE_RESNET = {"conv_shortcut.": "nin_shortcut."}
_KEEP: dict[str, str] = {}

Rename = Callable[[re.Match[str]], str]
Rule = tuple[str, Rename, dict[str, str]]  # pattern, new prefix, renames after the prefix


def _swap_prefix(text: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if text.startswith(old):
            return new + text[len(old) :]
    return text


def _const(prefix: str) -> Rename:
    return lambda match: prefix


def _rename(key: str, rules: list[Rule]) -> str:
    for pattern, replace, inner in rules:
        match = re.match(pattern, key)
        if match:
            return replace(match) + _swap_prefix(key[match.end() :], inner)
    raise ValueError(f"no LDM name for diffusers key {key!r}")


def unet_to_ldm(state: dict[str, Any], layers_per_block: int) -> dict[str, Any]:
    """A diffusers SD 1.x UNet state dict under ``model.diffusion_model.`` LDM names."""
    step = layers_per_block + 1
    with_attention = {int(k.split(".")[1]) for k in state if re.match(r"up_blocks\.\d+\.attn", k)}

    def down(match: re.Match[str], part: int) -> str:
        return f"input_blocks.{1 + int(match[1]) * step + int(match[2])}.{part}."

    def up(match: re.Match[str], part: int) -> str:
        return f"output_blocks.{int(match[1]) * step + int(match[2])}.{part}."

    def upsampler(match: re.Match[str]) -> str:
        part = 2 if int(match[1]) in with_attention else 1
        return f"output_blocks.{int(match[1]) * step + step - 1}.{part}."

    rules: list[Rule] = [(re.escape(old), _const(new), _KEEP) for old, new in _UNET_FIXED.items()]
    rules += [
        (r"down_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: down(m, 0), _UNET_RESNET),
        (r"down_blocks\.(\d+)\.attentions\.(\d+)\.", lambda m: down(m, 1), _KEEP),
        (
            r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.",
            lambda m: f"input_blocks.{(int(m[1]) + 1) * step}.0.op.",
            _KEEP,
        ),
        (r"up_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: up(m, 0), _UNET_RESNET),
        (r"up_blocks\.(\d+)\.attentions\.(\d+)\.", lambda m: up(m, 1), _KEEP),
        (r"up_blocks\.(\d+)\.upsamplers\.0\.", upsampler, _KEEP),
        (r"mid_block\.resnets\.(\d+)\.", lambda m: f"middle_block.{2 * int(m[1])}.", _UNET_RESNET),
        (r"mid_block\.attentions\.0\.", lambda m: "middle_block.1.", _KEEP),
    ]
    return {"model.diffusion_model." + _rename(k, rules): v for k, v in state.items()}


def vae_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """A diffusers AutoencoderKL state dict under ``first_stage_model.`` LDM names."""
    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.up_blocks."))
    rules: list[Rule] = [
        (r"(encoder|decoder)\.conv_norm_out\.", lambda m: f"{m[1]}.norm_out.", _KEEP),
        (
            r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.",
            lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.",
            _VAE_RESNET,
        ),
        (
            r"(encoder|decoder)\.mid_block\.attentions\.0\.",
            lambda m: f"{m[1]}.mid.attn_1.",
            _VAE_ATTENTION,
        ),
        (
            r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.",
            lambda m: f"encoder.down.{m[1]}.block.{m[2]}.",
            _VAE_RESNET,
        ),
        (
            r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.",
            lambda m: f"encoder.down.{m[1]}.downsample.",
            _KEEP,
        ),
        (
            r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
            lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.",
            _VAE_RESNET,
        ),
        (
            r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample.",
            _KEEP,
        ),
        (r"(encoder|decoder|quant_conv|post_quant_conv)\.", lambda m: m[0], _KEEP),
    ]
    out = {}
    for key, tensor in state.items():
        name = _rename(key, rules)
        if ".mid.attn_1." in name and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # the original VAE attention is 1x1 convolutions
        out["first_stage_model." + name] = tensor
    return out


def clip_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """A CLIP text encoder state dict under ``cond_stage_model.transformer.`` names."""
    prefix = "cond_stage_model.transformer.text_model."
    return {prefix + key.removeprefix("text_model."): value for key, value in state.items()}


def pipeline_to_ldm(pipe: Any) -> dict[str, Any]:
    """The whole SD 1.x pipeline as one original-layout state dict (contiguous tensors)."""
    layers = pipe.unet.config.layers_per_block
    state = unet_to_ldm(pipe.unet.state_dict(), layers)
    state |= vae_to_ldm(pipe.vae.state_dict())
    state |= clip_to_ldm(pipe.text_encoder.state_dict())
    return {key: tensor.detach().contiguous() for key, tensor in state.items()}


# --- writing ---------------------------------------------------------------------------


def _copy_configs(folder: Path, config_dir: Path) -> None:
    """Everything of a diffusers folder but its weights: what ``from_single_file`` needs."""
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix not in (".safetensors", ".bin"):
            target = config_dir / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)


def write_tiny_model(dest_dir: Path, *, seed: int = 0, size: str = "tiny") -> TinyModel:
    """Write the tiny model under ``dest_dir``: ``model.safetensors`` (LDM single file),
    ``config/sd-1.5/`` (configs only) and ``diffusers/`` (the same weights as a folder)."""
    from node.compute.training import safetensors_bytes

    if size not in SIZES:
        raise ValueError(f"unknown tiny model size {size!r}; known: {', '.join(SIZES)}")
    pipe = build_pipeline(SIZES[size], seed)
    folder = dest_dir / "diffusers"
    pipe.save_pretrained(folder, safe_serialization=True)
    config_dir = dest_dir / "config" / CONFIG_NAME
    _copy_configs(folder, config_dir)
    checkpoint = dest_dir / "model.safetensors"
    metadata = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1",
        "modelspec.implementation": "diffusers",
        "modelspec.title": f"civitas-{size}-seed{seed}",
    }
    data = safetensors_bytes(pipeline_to_ldm(pipe), metadata)
    checkpoint.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest().upper()
    return TinyModel(checkpoint, config_dir.parent, config_dir, folder, digest)
