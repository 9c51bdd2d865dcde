"""What a safetensors file is, read from its tensor names and shapes and its metadata.

Uploaders often leave the model type and base model blank or wrong, and a file fetched
from a peer should be described the same way on every node, so we derive them from the
validated header alone (no tensor data is read). The rules follow the loaders that have
to get this right to run a file at all: ComfyUI's ``model_detection.py`` (cross-attention
context width of the UNet, ``joint_blocks`` for SD3, ``double_blocks`` and ``guidance_in``
for Flux) and kohya sd-scripts (``lora_unet_``/``lora_te*_`` names, ``ss_*`` and
``modelspec.*`` metadata). Names are Civitai's, so records match what users search for.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from node.catalog.safetensors import SafetensorsHeader, TensorInfo

SD15, SD21, SDXL, PONY = "SD 1.5", "SD 2.1", "SDXL 1.0", "Pony"
SD3, SD35, FLUX_D, FLUX_S = "SD 3", "SD 3.5", "Flux.1 D", "Flux.1 S"
BASE_MODELS = (SD15, SD21, SDXL, SD3, SD35, FLUX_D, FLUX_S, PONY)
MODEL_TYPES = ("Checkpoint", "LORA", "LoCon", "TextualInversion", "VAE", "Controlnet", "Upscaler")

# Bases that share an architecture: metadata may refine a base within its family, but
# cannot move a file out of the family its tensors prove it belongs to.
_FAMILY = {SD15: "sd1", SD21: "sd2", SDXL: "sdxl", PONY: "sdxl", SD3: "sd3", SD35: "sd3"}
_FAMILY |= {FLUX_D: "flux", FLUX_S: "flux"}

# UNet cross-attention context width (attn2.to_k input) and CLIP text hidden size.
_BY_CONTEXT = {768: SD15, 1024: SD21, 2048: SDXL}
_BY_TEXT_HIDDEN = {768: SD15, 1024: SD21}

_PRECISION = {"F16": "fp16", "BF16": "bf16", "F32": "fp32"}
_TRAINING_PREFIXES = ("ss_", "modelspec.")
_LORA_DOWN = ("lora_down.weight", "lora_A.weight", "lora.down.weight")
_LORA_MARKS = ("lora_down", "lora_up", "lora_A.", "lora_B.", "lora.down.", "lora.up.")
_LYCORIS_MARKS = ("hada_w", "lokr_w", "lora_mid")
_VAE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_EMA_COUNTERS = frozenset({"model_ema.decay", "model_ema.num_updates"})
_UNET_PREFIX = "model.diffusion_model."
_JOINT_BLOCK = re.compile(r"joint_blocks[._](\d+)[._]")
_FLUX_MARKS = ("double_blocks", "single_blocks", "single_transformer_blocks")
_SD3_MEDIUM_DEPTH = 24  # SD 3 Medium has 24 joint blocks; SD 3.5 Large has 38

# Base checkpoint file names seen in ss_sd_model_name, most specific first.
_NAMED_BASES = (
    (re.compile(r"flux.?1.?schnell"), FLUX_S),
    (re.compile(r"flux.?1"), FLUX_D),
    (re.compile(r"sd.?3.?5|stable.diffusion.3.?5"), SD35),
    (re.compile(r"sd.?3|stable.diffusion.3"), SD3),
    (re.compile(r"sd.?xl|stable.diffusion.xl"), SDXL),
    (re.compile(r"v2-1|sd[-_]?v?2[-_.]?[01]|stable.diffusion.(v?2|2)"), SD21),
    (re.compile(r"v1-[45]|sd[-_]?v?1[-_.]?[45]|stable.diffusion.v?1"), SD15),
)


@dataclass(frozen=True)
class Detection:
    """Civitai-style description of a file; ``None`` where the header does not say."""

    model_type: str | None
    base_model: str | None
    precision: str | None
    size: str | None
    training: dict[str, str]


def detect(header: SafetensorsHeader) -> Detection:
    """Describe the file whose validated header is ``header``."""
    tensors = header.tensors
    model_type = _model_type(tensors, header.metadata)
    shape_base = _shape_base(tensors, model_type)
    return Detection(
        model_type=model_type,
        base_model=_reconcile(shape_base, _stated_base(header.metadata)),
        precision=_precision(tensors.values()),
        size=_size(tensors) if model_type == "Checkpoint" else None,
        training={k: v for k, v in header.metadata.items() if k.startswith(_TRAINING_PREFIXES)},
    )


# --- model type ------------------------------------------------------------------------


def _model_type(tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str]) -> str | None:
    names = list(tensors)
    if not names:
        return None
    if _is_embedding(names):
        return "TextualInversion"
    if any(mark in name for name in names for mark in _LORA_MARKS + _LYCORIS_MARKS):
        return "LoCon" if _is_locon(tensors, metadata) else "LORA"
    if any(
        name.startswith("control_model.")
        or "input_hint_block." in name
        or name.startswith("controlnet_")
        for name in names
    ):
        return "Controlnet"
    if _is_vae(names):
        return "VAE"
    if _is_diffusion_model(names):
        return "Checkpoint"
    if _is_upscaler(names):
        return "Upscaler"
    return None


def _is_embedding(names: list[str]) -> bool:
    """A1111/kohya embeddings: ``emb_params`` or ``string_to_param.*``; SDXL: clip_l+clip_g."""
    if len(names) > 4:
        return False
    return all(
        name in ("emb_params", "clip_l", "clip_g")
        or name.startswith(("string_to_param.", "string_to_token."))
        for name in names
    )


def _is_locon(tensors: Mapping[str, TensorInfo], metadata: Mapping[str, str]) -> bool:
    """LoCon is LoRA that also adapts 3x3 convolutions. SD 1.x LoRA already has 4-D
    ``lora_down`` weights for the 1x1 ``proj_in``/``proj_out`` convs, so only a kernel
    wider than 1x1, a LyCORIS-only layout, or the network module stated says LoCon."""
    module = metadata.get("ss_network_module", "").lower()
    if "lycoris" in module or "locon" in module:
        return True
    for name, info in tensors.items():
        if any(mark in name for mark in _LYCORIS_MARKS):
            return True
        if name.endswith(_LORA_DOWN) and len(info.shape) == 4 and info.shape[2:] != (1, 1):
            return True
    return False


def _is_vae(names: list[str]) -> bool:
    """A standalone VAE holds only the autoencoder (EMA counters aside)."""
    parts = [name for name in names if name not in _EMA_COUNTERS]
    return any(name.startswith(("encoder.", "decoder.")) for name in parts) and all(
        name.startswith(_VAE_PREFIXES) for name in parts
    )


def _is_diffusion_model(names: list[str]) -> bool:
    """A full checkpoint (``model.diffusion_model.*``) or a bare UNet/DiT file."""
    for name in names:
        bare = name.removeprefix(_UNET_PREFIX)
        if name != bare or bare.startswith(("input_blocks.", "double_blocks.", "joint_blocks.")):
            return True
    return False


def _is_upscaler(names: list[str]) -> bool:
    """ESRGAN/Real-ESRGAN (RRDB blocks) and SwinIR-style ``conv_first``/``conv_last`` nets."""
    present = set(names)
    if "conv_first.weight" in present and "conv_last.weight" in present:
        return True
    return any(".RDB1." in name or ".rdb1." in name for name in names)


# --- base model ------------------------------------------------------------------------


def _shape_base(tensors: Mapping[str, TensorInfo], model_type: str | None) -> str | None:
    """The base family the tensors prove, most telling evidence first."""
    names = list(tensors)
    if model_type == "TextualInversion":
        return _embedding_base(tensors)
    if model_type in (None, "VAE", "Upscaler"):
        return None  # SD 1.x, 2.x and XL share one VAE; upscalers are base-agnostic
    if any(mark in n for n in names for mark in _FLUX_MARKS):
        # Only Flux.1 dev and its derivatives embed guidance; LoRAs rarely carry it.
        if model_type == "Checkpoint" and not any("guidance_in." in n for n in names):
            return FLUX_S
        return FLUX_D
    if any("joint_blocks" in n for n in names):
        return _sd3_base(names)
    context = _widths(tensors, lambda n: "attn2" in n and "to_k" in n)
    for width in context:
        if width in _BY_CONTEXT:
            return _BY_CONTEXT[width]
    if any(
        n.startswith(("conditioner.embedders.1.", "lora_te2_", "text_encoder_2."))
        or n.startswith(("lora_unet_input_blocks_", "lora_unet_output_blocks_"))
        or n.removeprefix(_UNET_PREFIX).startswith("label_emb.")
        for n in names
    ):
        return SDXL
    hidden = _widths(
        tensors,
        lambda n: (
            n.startswith(("lora_te_", "text_encoder.", "cond_stage_model."))
            and ("k_proj" in n or "q_proj" in n)
        ),
    )
    for width in hidden:
        if width in _BY_TEXT_HIDDEN:
            return _BY_TEXT_HIDDEN[width]
    return None


def _widths(tensors: Mapping[str, TensorInfo], wanted: Callable[[str], bool]) -> list[int]:
    """Input widths of matching linear weights (plain, or the down/A half of a LoRA)."""
    found = []
    for name, info in tensors.items():
        if len(info.shape) != 2 or not wanted(name):
            continue
        if name.endswith(_LORA_DOWN) or not any(m in name for m in _LORA_MARKS + _LYCORIS_MARKS):
            found.append(info.shape[1])
    return found


def _sd3_base(names: list[str]) -> str:
    """SD 3.5 Large is deeper than SD 3 Medium; SD 3.5 Medium adds x-block self-attention."""
    if any("x_block.attn2" in n or "x_block_attn2" in n for n in names):
        return SD35
    depth = 1 + max((int(m.group(1)) for n in names if (m := _JOINT_BLOCK.search(n))), default=0)
    return SD35 if depth > _SD3_MEDIUM_DEPTH else SD3


def _embedding_base(tensors: Mapping[str, TensorInfo]) -> str | None:
    if "clip_g" in tensors:
        return SDXL
    for info in tensors.values():
        if info.name == "emb_params" or info.name.startswith("string_to_param."):
            return _BY_TEXT_HIDDEN.get(info.shape[-1]) if info.shape else None
    return None


def _stated_base(metadata: Mapping[str, str]) -> str | None:
    """The base the trainer wrote down: modelspec, then kohya's version, then its file."""
    arch = metadata.get("modelspec.architecture", "").lower().split("/")[0].strip()
    version = metadata.get("ss_base_model_version", "").lower()
    source = metadata.get("ss_sd_model_name", "").lower()
    if "pony" in f"{arch} {version} {source}":
        return PONY
    stated = _base_from_arch(arch) or _base_from_kohya(version)
    if stated is None and metadata.get("ss_v2") == "True":  # kohya before ss_base_model_version
        stated = SD21
    return stated or _base_from_name(source)


def _base_from_arch(arch: str) -> str | None:
    if arch.startswith("flux-1-schnell"):
        return FLUX_S
    if arch.startswith("flux-1-dev"):
        return FLUX_D
    if arch.startswith("stable-diffusion-xl-v1-base"):
        return SDXL
    if re.match(r"stable-diffusion-v?3[.-]5", arch):
        return SD35
    if re.match(r"stable-diffusion-v?3", arch):
        return SD3
    if arch.startswith("stable-diffusion-v2"):
        return SD21
    if arch.startswith("stable-diffusion-v1"):
        return SD15
    return None


def _base_from_kohya(version: str) -> str | None:
    """kohya's ``ss_base_model_version``: sd_v1, sd_v2[_v], sdxl_base_v1-0, sd3*, flux1."""
    if version.startswith("sdxl"):
        return SDXL
    if version.startswith("sd3"):
        return SD35 if re.match(r"sd3[._-]?5", version) else SD3
    if version.startswith("sd_v2"):
        return SD21
    if version.startswith("sd_v1"):
        return SD15
    if version.startswith("flux1"):
        return FLUX_S if "schnell" in version else FLUX_D
    return None


def _base_from_name(source: str) -> str | None:
    for pattern, base in _NAMED_BASES:
        if source and pattern.search(source):
            return base
    return None


def _reconcile(shape_base: str | None, stated: str | None) -> str | None:
    """Tensors decide the family; metadata may only refine within it (SD 3 vs 3.5,
    Flux dev vs schnell, Pony within SDXL) or speak where the tensors are silent."""
    if shape_base is None or stated is None:
        return stated or shape_base
    return stated if _FAMILY[stated] == _FAMILY[shape_base] else shape_base


# --- precision and size ----------------------------------------------------------------


def _precision(tensors: Iterable[TensorInfo]) -> str | None:
    """The float format holding most of the bytes (a few fp32 norms don't make fp32)."""
    totals: dict[str, int] = {}
    for info in tensors:
        label = "fp8" if info.dtype.startswith("F8_") else _PRECISION.get(info.dtype)
        if label:
            totals[label] = totals.get(label, 0) + info.end - info.start
    if not totals:
        return None
    return max(totals, key=lambda label: (totals[label], label))


def _size(tensors: Mapping[str, TensorInfo]) -> str:
    """EMA weights (``model_ema.*``, beyond its two counters) make a checkpoint full."""
    has_ema = any(n.startswith("model_ema.") and n not in _EMA_COUNTERS for n in tensors)
    return "full" if has_ema else "pruned"
