"""Text-to-image generation with diffusers, and the cache that keeps a model loaded.

Importing this module costs nothing: torch and diffusers are imported by the functions
that run a model, so a node without the compute extras can import it, call
:func:`compute_available` and :func:`find_config`, and say what is missing.

Real checkpoints are single ``.safetensors`` files without the diffusers configs that
``from_single_file`` needs, and a worker never reaches the Hub. So the node keeps a
*config root*: one diffusers config folder per base model, named by its slug
(``SD 1.5`` -> ``sd-1.5``, ``SDXL 1.0`` -> ``sdxl-1.0``); a base without its own folder
uses its family's (Pony -> ``sdxl-1.0``). A diffusers *folder* model carries its own.

A worker runs one job at a time on a device; :class:`PipelineCache` keeps the most recent
pipelines so consecutive jobs on one checkpoint skip the load. LoRAs are loaded per job
and unloaded after it, and each job builds its scheduler from the checkpoint's original
config, so nothing of one job reaches the next.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from node.compute.parameters import format_parameters, png_with_parameters
from node.compute.samplers import make_scheduler
from node.compute.specs import GeneratedImage, GenerateRequest, LoraSpec
from node.errors import BadRequest, CivitasError, ConfigError

INSTALL_HINT = "pip install 'civitas[compute]'"
_REQUIRED = ("torch", "diffusers", "transformers", "peft")

SD_BASES = ("SD 1.4", "SD 1.5", "SD 1.5 LCM", "SD 1.5 Hyper", "SD 2.0", "SD 2.1")
SDXL_BASES: tuple[str, ...] = ("SDXL 0.9", "SDXL 1.0", "SDXL 1.0 LCM", "SDXL Turbo")
SDXL_BASES += ("SDXL Lightning", "SDXL Hyper", "Pony", "Illustrious", "NoobAI")
_FAMILY_CONFIG = {"sd1": "sd-1.5", "sd2": "sd-2.1", "sdxl": "sdxl-1.0"}
_PIPELINES = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline"}
_PIPELINES["sdxl"] = "StableDiffusionXLPipeline"


class ComputeUnavailable(CivitasError):
    """This machine lacks torch, diffusers, transformers or peft."""

    code = "compute_unavailable"
    status = 503


def compute_available() -> str | None:
    """``None`` when generation and training can run here, else why not and what to do."""
    missing = [name for name in _REQUIRED if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return f"{', '.join(missing)} {verb} not installed: {INSTALL_HINT}"


def require_compute() -> Any:
    """The ``torch`` module, or :class:`ComputeUnavailable` saying what to install."""
    reason = compute_available()
    if reason is not None:
        raise ComputeUnavailable(reason)
    return importlib.import_module("torch")


# --- base models and their configs -----------------------------------------------------


def family(base_model: str) -> str:
    """``sd1``, ``sd2`` or ``sdxl``; :class:`BadRequest` for a base we cannot run."""
    if base_model in SDXL_BASES:
        return "sdxl"
    if base_model in SD_BASES:
        return "sd2" if base_model.startswith("SD 2") else "sd1"
    known = ", ".join(SD_BASES + SDXL_BASES)
    raise BadRequest(f"cannot run base model {base_model!r}; supported: {known}")


def config_slug(base_model: str) -> str:
    """The config folder name of a base model: ``SD 1.5`` -> ``sd-1.5``."""
    return re.sub(r"[^a-z0-9.]+", "-", base_model.lower()).strip("-")


def find_config(config_root: Path, base_model: str) -> Path:
    """The diffusers config folder for ``base_model`` under ``config_root``."""
    names = dict.fromkeys((config_slug(base_model), _FAMILY_CONFIG[family(base_model)]))
    for name in names:
        if (config_root / name / "model_index.json").is_file():
            return config_root / name
    present = [p.parent.name for p in sorted(config_root.glob("*/model_index.json"))]
    raise ConfigError(
        f"no diffusers config for base model {base_model!r} in {config_root}: looked for "
        f"{' or '.join(names)}/model_index.json; found {', '.join(present) or 'none'}. "
        "Copy the model's diffusers repository there without its weights."
    )


def load_pipeline(
    checkpoint: Path, base_model: str, config_root: Path, device: str, *, half: bool | None = None
) -> Any:
    """A diffusers pipeline for a single-file checkpoint or a diffusers folder, offline.

    ``half`` (default: on CUDA) loads fp16 weights; the CPU computes in fp32.
    """
    torch = require_compute()
    diffusers = importlib.import_module("diffusers")
    kind = family(base_model)
    cls = getattr(diffusers, _PIPELINES[kind])
    half = device.startswith("cuda") if half is None else half
    # fp32 is every component's default; naming it makes diffusers cast and warn.
    options: dict[str, Any] = {"torch_dtype": torch.float16} if half else {}
    if kind != "sdxl":
        options |= {"safety_checker": None, "feature_extractor": None}
        options["requires_safety_checker"] = False
    if checkpoint.is_dir():
        pipe = cls.from_pretrained(str(checkpoint), local_files_only=True, **options)
    else:
        config = find_config(config_root, base_model)
        pipe = cls.from_single_file(
            str(checkpoint), config=str(config), local_files_only=True, **options
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# --- the cache -------------------------------------------------------------------------


@dataclass
class LoadedPipeline:
    """A cached pipeline and the scheduler config its checkpoint came with."""

    pipe: Any
    scheduler_config: dict[str, Any]


class PipelineCache:
    """The ``capacity`` most recently used pipelines, by (sha256, config, device)."""

    def __init__(self, capacity: int = 1) -> None:
        if capacity < 1:
            raise ValueError("a pipeline cache holds at least one pipeline")
        self.capacity = capacity
        self._loaded: OrderedDict[tuple[str, str, str], LoadedPipeline] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._loaded)

    def get(
        self, checkpoint: Path, sha256: str, base_model: str, config_root: Path, device: str
    ) -> LoadedPipeline:
        """The pipeline for this checkpoint on ``device``, loading it on a miss."""
        config = checkpoint if checkpoint.is_dir() else find_config(config_root, base_model)
        key = (sha256.upper(), str(config.resolve()), device)
        with self._lock:
            found = self._loaded.get(key)
            if found is not None:
                self._loaded.move_to_end(key)
                return found
            while len(self._loaded) >= self.capacity:
                self._loaded.popitem(last=False)  # free it before loading the next
            pipe = load_pipeline(checkpoint, base_model, config_root, device)
            loaded = LoadedPipeline(pipe, dict(pipe.scheduler.config))
            self._loaded[key] = loaded
            return loaded

    def clear(self) -> None:
        with self._lock:
            self._loaded.clear()


# --- generation ------------------------------------------------------------------------


def _load_lora(pipe: Any, lora: LoraSpec, adapter: str) -> None:
    """Load one LoRA as ``adapter``; one that does not fit the model is a BadRequest."""
    torch = importlib.import_module("torch")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        pipe.load_lora_weights(load_file(str(lora.path)), adapter_name=adapter)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, KeyError, OSError, SafetensorError) as error:
        detail = " ".join(" ".join(str(error).splitlines()[:2]).split())[:300]
        raise BadRequest(
            f"LoRA {lora.name!r} cannot be applied to this checkpoint: {detail}"
        ) from error


@contextmanager
def loras_applied(pipe: Any, loras: Sequence[LoraSpec]) -> Iterator[None]:
    """``loras`` loaded into ``pipe`` at their weights for the block, then unloaded."""
    if not loras:
        yield
        return
    try:
        names = [f"job_lora_{index}" for index in range(len(loras))]
        for lora, name in zip(loras, names, strict=True):
            _load_lora(pipe, lora, name)
        pipe.set_adapters(names, adapter_weights=[float(Decimal(x.weight)) for x in loras])
        yield
    finally:
        pipe.unload_lora_weights()  # also after a failed load, which may leave layers behind


def _progress_callback(req: GenerateRequest, done: int) -> Any:
    total = req.steps * req.count

    def on_step_end(pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> Any:
        if req.progress is not None:
            req.progress(done + step + 1, total)
        return kwargs

    return on_step_end


def _render(pipe: Any, req: GenerateRequest, seed: int, done: int) -> Any:
    """One image, its noise from a CPU generator (A1111's "CPU" RNG): alike on every device."""
    torch = importlib.import_module("torch")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    result = pipe(
        prompt=req.prompt,
        negative_prompt=req.negative_prompt or None,
        num_inference_steps=req.steps,
        guidance_scale=float(Decimal(req.cfg_scale)),
        width=req.width,
        height=req.height,
        generator=generator,
        output_type="pil",
        callback_on_step_end=_progress_callback(req, done),
    )
    return result.images[0]


def generate(
    req: GenerateRequest, *, device: str = "cpu", cache: PipelineCache
) -> list[GeneratedImage]:
    """Run ``req``: ``req.count`` PNGs, image ``i`` from seed ``req.seed + i``."""
    require_compute()
    loaded = cache.get(
        req.checkpoint, req.checkpoint_sha256, req.base_model, req.config_root, device
    )
    pipe = loaded.pipe
    pipe.scheduler = make_scheduler(req.sampler, loaded.scheduler_config)
    images = []
    with loras_applied(pipe, req.loras):
        for index in range(req.count):
            seed = req.seed + index
            image = _render(pipe, req, seed, done=index * req.steps)
            png = png_with_parameters(image, format_parameters(req, seed=seed))
            images.append(GeneratedImage(png, seed, req.width, req.height))
    return images
