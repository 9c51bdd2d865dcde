"""Checking a kohya-format LoRA against the base checkpoint it claims, without torch.

A worker's training result is accepted only if it is what the node asked for: a valid
safetensors file of kohya LoRA tensors only, whose header names the base checkpoint by
SHA256, and every adapted module of which exists in that base with matching shapes
(``lora_down`` is rank x in, ``lora_up`` is out x rank). Only headers are read, with
``node.catalog.safetensors.read_header``, so a node without compute extras can check.

Module names are matched both ways kohya writes them: diffusers paths
(``lora_unet_down_blocks_0_attentions_0_…``, SD 1.x/2.x) and original paths
(``lora_unet_input_blocks_4_1_…``, SDXL); text encoders as ``lora_te_``/``lora_te1_``
(CLIP) and ``lora_te_``/``lora_te2_`` (OpenCLIP, whose fused q/k/v are split in three).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from node.catalog.safetensors import SafetensorsHeader, read_header
from node.errors import BadRequest

Shape = tuple[int, ...]

_LORA_KEY = re.compile(r"(lora_(?:unet|te|te1|te2)_\w+)\.(lora_down\.weight|lora_up\.weight|alpha)")
_FLOATS = frozenset({"F16", "BF16", "F32"})
_BASE_HASH_KEYS = ("civitas_base_sha256", "ss_new_sd_model_hash")
_UNET = "model.diffusion_model."
_CLIP_PREFIXES = {
    "cond_stage_model.transformer.": ("lora_te_",),
    "conditioner.embedders.0.transformer.": ("lora_te1_",),
}
_OPEN_CLIP_PREFIXES = {
    "cond_stage_model.model.transformer.resblocks.": "lora_te_",
    "conditioner.embedders.1.model.transformer.resblocks.": "lora_te2_",
}
_OPEN_CLIP_PARTS = {"attn.out_proj": "self_attn_out_proj", "mlp.c_fc": "mlp_fc1"}
_OPEN_CLIP_PARTS["mlp.c_proj"] = "mlp_fc2"
_UNET_FIXED = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "input_blocks.0.0": "conv_in",
    "out.2": "conv_out",
}
_RESNET = {
    "in_layers.2": "conv1",
    "out_layers.3": "conv2",
    "emb_layers.1": "time_emb_proj",
    "skip_connection": "conv_shortcut",
}


def _refuse(message: str) -> BadRequest:
    return BadRequest(f"LoRA refused: {message}")


# --- the LoRA --------------------------------------------------------------------------


def lora_modules(header: SafetensorsHeader) -> dict[str, dict[str, Shape]]:
    """Kohya module name -> its parts' shapes; refuses anything but a plain kohya LoRA."""
    modules: dict[str, dict[str, Shape]] = {}
    for name, info in header.tensors.items():
        match = _LORA_KEY.fullmatch(name)
        if match is None:
            raise _refuse(f"tensor {name!r} is not part of a kohya-format LoRA")
        if info.dtype not in _FLOATS:
            raise _refuse(f"tensor {name!r} has dtype {info.dtype}, not a float")
        modules.setdefault(match[1], {})[match[2].split(".")[0]] = info.shape
    if not modules:
        raise _refuse("the file holds no LoRA tensors")
    for module, parts in modules.items():
        _check_parts(module, parts)
    return modules


def _check_parts(module: str, parts: Mapping[str, Shape]) -> None:
    down, up = parts.get("lora_down"), parts.get("lora_up")
    if down is None or up is None:
        raise _refuse(f"module {module!r} lacks its lora_down or lora_up weight")
    if len(down) not in (2, 4) or len(up) not in (2, 4) or down[0] != up[1] or down[0] < 1:
        raise _refuse(f"module {module!r} has inconsistent shapes down {down}, up {up}")
    if parts.get("alpha", ()) not in ((), (1,)):
        raise _refuse(f"module {module!r} has an alpha that is not a scalar")


def _check_base_hash(metadata: Mapping[str, str], base_sha256: str) -> None:
    stated = {key: metadata[key] for key in _BASE_HASH_KEYS if metadata.get(key)}
    if not stated:
        raise _refuse(f"its header does not name its base checkpoint ({_BASE_HASH_KEYS[0]})")
    for key, value in stated.items():
        if value.strip().lower() != base_sha256.strip().lower():
            raise _refuse(f"{key} says it was trained on {value}, not on {base_sha256}")


# --- the base --------------------------------------------------------------------------


def _layers_per_block(names: list[str]) -> int:
    """UNet resnets per level: one less than the index of the first downsampler."""
    ops = [int(m[1]) for n in names if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.", n))]
    if ops:
        return min(ops) - 1
    blocks = [int(m[1]) for n in names if (m := re.match(r"input_blocks\.(\d+)\.", n))]
    return max(blocks, default=1)


def _diffusers_unet_name(ldm: str, layers: int) -> str | None:
    """An original UNet module path as diffusers names it, for the parts LoRAs adapt."""
    step = layers + 1
    if ldm in _UNET_FIXED:
        return _UNET_FIXED[ldm]
    if match := re.fullmatch(r"input_blocks\.(\d+)\.0\.op", ldm):
        return f"down_blocks.{int(match[1]) // step - 1}.downsamplers.0.conv"
    if match := re.fullmatch(r"middle_block\.(\d)\.(.+)", ldm):
        part = int(match[1])
        if part == 1:
            return f"mid_block.attentions.0.{match[2]}"
        return f"mid_block.resnets.{part // 2}.{_RESNET.get(match[2], match[2])}"
    match = re.fullmatch(r"(input|output)_blocks\.(\d+)\.(\d)\.(.+)", ldm)
    if match is None or ldm.startswith("input_blocks.0."):
        return None
    side, part, rest = match[1], int(match[3]), match[4]
    block, layer = divmod(int(match[2]) - (side == "input"), step)
    prefix = f"{'down' if side == 'input' else 'up'}_blocks.{block}"
    if part == 0:
        return f"{prefix}.resnets.{layer}.{_RESNET.get(rest, rest)}"
    if rest.startswith("conv"):
        return f"{prefix}.upsamplers.0.{rest}"
    return f"{prefix}.attentions.{layer}.{rest}"


def _kohya(prefix: str, path: str) -> str:
    return prefix + path.replace(".", "_")


def _open_clip_modules(prefix: str, rest: str, shape: Shape) -> Iterator[tuple[str, Shape]]:
    layer, _, part = rest.partition(".")
    head = f"{prefix}text_model_encoder_layers_{layer}_"
    if part == "attn.in_proj_weight" and len(shape) == 2:
        for letter in "qkv":
            yield f"{head}self_attn_{letter}_proj", (shape[0] // 3, shape[1])
    elif part.endswith(".weight") and part[: -len(".weight")] in _OPEN_CLIP_PARTS:
        yield head + _OPEN_CLIP_PARTS[part[: -len(".weight")]], shape


def _base_module_names(name: str, shape: Shape, layers: int) -> Iterator[tuple[str, Shape]]:
    """Every kohya module name under which a LoRA may adapt base tensor ``name``."""
    for prefix, kohya in _OPEN_CLIP_PREFIXES.items():
        if name.startswith(prefix):
            yield from _open_clip_modules(kohya, name[len(prefix) :], shape)
            return
    if not name.endswith(".weight"):
        return
    stem = name[: -len(".weight")]
    if stem.startswith(_UNET):
        ldm = stem[len(_UNET) :]
        yield _kohya("lora_unet_", ldm), shape
        diffusers = _diffusers_unet_name(ldm, layers)
        if diffusers is not None:
            yield _kohya("lora_unet_", diffusers), shape
    elif stem.startswith(("down_blocks.", "up_blocks.", "mid_block.")):
        yield _kohya("lora_unet_", stem), shape
    for prefix, kohyas in _CLIP_PREFIXES.items():
        if stem.startswith(prefix):
            for kohya in kohyas:
                yield _kohya(kohya, stem[len(prefix) :]), shape


def base_modules(header: SafetensorsHeader) -> dict[str, Shape]:
    """Kohya module name -> weight shape, for every module of a single-file checkpoint."""
    names = [name.removeprefix(_UNET) for name in header.tensors if name.startswith(_UNET)]
    layers = _layers_per_block(names)
    found: dict[str, Shape] = {}
    for name, info in header.tensors.items():
        for module, shape in _base_module_names(name, info.shape, layers):
            found.setdefault(module, shape)
    return found


def _kernel(shape: Shape) -> Shape:
    """The kernel of a weight shape; a linear layer and a 1x1 convolution are alike."""
    return () if shape[2:] in ((), (1, 1)) else shape[2:]


def _check_module(module: str, parts: Mapping[str, Shape], base: Shape) -> None:
    down, up = parts["lora_down"], parts["lora_up"]
    if len(base) not in (2, 4) or up[0] != base[0] or down[1] != base[1]:
        raise _refuse(
            f"module {module!r} (down {down}, up {up}) does not fit the base weight {base}"
        )
    if _kernel(down) != _kernel(base) or _kernel(up) != ():
        raise _refuse(f"module {module!r} has a kernel that does not fit the base weight {base}")


def check_lora(lora_path: Path, base: SafetensorsHeader | Path, base_sha256: str) -> None:
    """Accept the LoRA at ``lora_path`` as trained on ``base`` (a single-file checkpoint or
    its header), or raise :class:`BadRequest` saying why not. An invalid file raises
    ``read_header``'s error."""
    header = read_header(lora_path)
    modules = lora_modules(header)
    _check_base_hash(header.metadata, base_sha256)
    if isinstance(base, Path):
        if base.is_dir():
            raise _refuse("the base must be a single-file checkpoint, not a folder")
        base = read_header(base)
    known = base_modules(base)
    for module, parts in sorted(modules.items()):
        shape = known.get(module)
        if shape is None:
            raise _refuse(f"module {module!r} does not exist in the base checkpoint")
        _check_module(module, parts, shape)
