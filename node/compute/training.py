"""LoRA training with peft on an SD 1.x/2.x checkpoint, saved as a kohya-format file.

Format: kohya's ``sd-scripts`` LoRA layout, the one A1111, ComfyUI and diffusers'
``load_lora_weights`` all load: per adapted module
``lora_unet_<diffusers module path, dots as underscores>.lora_down.weight`` (rank x in),
``.lora_up.weight`` (out x rank) and ``.alpha`` (scale = alpha / rank), fp16, with kohya's
``ss_*`` and SAI ``modelspec.*`` string metadata in the header. ``ss_new_sd_model_hash``
and ``civitas_base_sha256`` name the base checkpoint by its SHA256, which is what
``lora_check.check_lora`` verifies before a node accepts the result.

Training: LoRA (peft, gaussian init) on the UNet attention projections (to_q, to_k, to_v,
to_out.0) only, everything else frozen; batch size 1, AdamW at a constant rate, the
standard noise-prediction MSE under the model's DDPM noise schedule (v-prediction for
SD 2.x v models). Images are resized and center-cropped to the resolution and encoded
once; captions are prefixed with the trigger word. Everything random comes from the
request's seed, so the same request on the same machine gives the same weights.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import io
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from node.compute.pipelines import family, load_pipeline, require_compute
from node.compute.specs import TrainRequest
from node.errors import BadRequest, CivitasError

TARGET_MODULES = ("to_k", "to_q", "to_v", "to_out.0")
Progress = Callable[[int, float], None]


class TrainingDiverged(CivitasError):
    """The loss became NaN or infinite: the learning rate is too high for this data."""

    code = "training_diverged"
    status = 422


# --- file format -----------------------------------------------------------------------


def safetensors_bytes(tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> bytes:
    """A safetensors file whose bytes depend only on its content.

    The safetensors library writes ``__metadata__`` in hash-map order, which changes from
    run to run; the header is rewritten here with sorted metadata, padded to 8 bytes.
    """
    from safetensors.torch import save

    raw = save(dict(tensors))
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    header.pop("__metadata__", None)
    ordered = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    ordered |= sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + size :]


def kohya_state_dict(peft_state: Mapping[str, Any], alpha: int) -> dict[str, Any]:
    """peft's UNet LoRA weights (``<module>.lora_A.weight``) under kohya's names, fp16."""
    torch = importlib.import_module("torch")
    out: dict[str, Any] = {}
    for key, tensor in peft_state.items():
        module, _, part = key.rpartition(".lora_")
        name = "lora_unet_" + module.replace(".", "_")
        half = "lora_down" if part == "A.weight" else "lora_up"
        out[f"{name}.{half}.weight"] = tensor.detach().to("cpu", torch.float16).contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float16)
    return out


def _autov1(path: Path) -> str:
    """kohya's ``ss_sd_model_hash``: A1111's old hash (64 KiB at 1 MiB), 8 hex."""
    if not path.is_file():
        return ""
    with path.open("rb") as file:
        file.seek(0x100000)
        return hashlib.sha256(file.read(0x10000)).hexdigest()[:8]


def _architecture(req: TrainRequest, v_prediction: bool) -> tuple[str, str]:
    """kohya's ``ss_base_model_version`` and SAI's ``modelspec.architecture``."""
    if family(req.base_model) == "sd1":
        return "sd_v1", "stable-diffusion-v1/lora"
    if v_prediction:
        return "sd_v2_v", "stable-diffusion-v2-768-v/lora"
    return "sd_v2", "stable-diffusion-v2-512/lora"


def lora_metadata(
    req: TrainRequest, captions: Sequence[str], started: float, v_prediction: bool
) -> dict[str, str]:
    """The header metadata: kohya's ``ss_*`` keys, SAI ``modelspec.*``, and ours."""
    version, architecture = _architecture(req, v_prediction)
    subset = f"1_{req.trigger_word or req.output_name}"
    tags = Counter(tag.strip() for caption in captions for tag in caption.split(",") if tag)
    size = f"{req.resolution}x{req.resolution}"
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(req.rank),
        "ss_network_alpha": str(req.alpha),
        "ss_network_train_unet_only": "True",
        "ss_base_model_version": version,
        "ss_v2": str(version != "sd_v1"),
        "ss_sd_model_name": req.checkpoint.name,
        "ss_sd_model_hash": _autov1(req.checkpoint),
        "ss_new_sd_model_hash": req.checkpoint_sha256.lower(),
        "civitas_base_sha256": req.checkpoint_sha256.upper(),
        "ss_output_name": req.output_name,
        "ss_training_comment": f"trigger word: {req.trigger_word}",
        "ss_steps": str(req.steps),
        "ss_max_train_steps": str(req.steps),
        "ss_learning_rate": req.learning_rate,
        "ss_unet_lr": req.learning_rate,
        "ss_optimizer": "torch.optim.adamw.AdamW",
        "ss_lr_scheduler": "constant",
        "ss_batch_size_per_device": "1",
        "ss_num_train_images": str(len(captions)),
        "ss_resolution": f"({req.resolution}, {req.resolution})",
        "ss_seed": str(req.seed),
        "ss_mixed_precision": "no",
        "ss_tag_frequency": json.dumps({subset: dict(tags)}, ensure_ascii=False),
        "ss_dataset_dirs": json.dumps({subset: {"n_repeats": 1, "img_count": len(captions)}}),
        "ss_training_started_at": str(started),
        "ss_training_finished_at": str(time.time()),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture,
        "modelspec.implementation": "diffusers",
        "modelspec.title": req.output_name,
        "modelspec.resolution": size,
        "modelspec.date": datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(),
        "civitas_trigger_word": req.trigger_word,
    }


# --- data ------------------------------------------------------------------------------


def _pixels(data: bytes, index: int, resolution: int) -> Any:
    """Image ``index`` resized and center-cropped to a square, as a [-1, 1] CHW tensor."""
    torch = importlib.import_module("torch")
    numpy = importlib.import_module("numpy")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise BadRequest(f"training image {index + 1} is not a readable image: {error}") from None
    image = ImageOps.fit(image, (resolution, resolution), Image.Resampling.BICUBIC)
    array = numpy.asarray(image, dtype=numpy.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def captions_for(req: TrainRequest) -> list[str]:
    """Each image's caption with the trigger word first, as kohya's datasets do."""
    trigger = req.trigger_word.strip()
    found = []
    for _, caption in req.images:
        parts = [part for part in (trigger, caption.strip()) if part]
        found.append(", ".join(parts))
    return found


def _encode(pipe: Any, req: TrainRequest, captions: list[str], generator: Any) -> tuple[Any, Any]:
    """Latents and text embeddings of the whole set, computed once (both are frozen)."""
    torch = importlib.import_module("torch")
    device = pipe.unet.device
    latents = []
    with torch.no_grad():
        for index, (data, _) in enumerate(req.images):
            pixels = _pixels(data, index, req.resolution)[None].to(device)
            dist = pipe.vae.encode(pixels).latent_dist
            latents.append(dist.sample(generator=generator) * pipe.vae.config.scaling_factor)
        tokens = pipe.tokenizer(
            captions,
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        embeddings = pipe.text_encoder(tokens.input_ids.to(device))[0]
    return torch.cat(latents), embeddings


def _order(count: int, generator: Any) -> Iterator[int]:
    """Image indices, epoch after epoch, each epoch a fresh seeded shuffle."""
    torch = importlib.import_module("torch")
    while True:
        yield from torch.randperm(count, generator=generator).tolist()


# --- training --------------------------------------------------------------------------


def _add_lora(unet: Any, req: TrainRequest) -> list[Any]:
    """Freeze the UNet and give it a fresh LoRA adapter; its parameters, to train."""
    from peft import LoraConfig

    torch = importlib.import_module("torch")
    unet.requires_grad_(False)
    torch.manual_seed(req.seed)  # peft draws the gaussian init from the global generator
    config = LoraConfig(
        r=req.rank,
        lora_alpha=req.alpha,
        init_lora_weights="gaussian",
        target_modules=list(TARGET_MODULES),
    )
    unet.add_adapter(config)
    return [parameter for parameter in unet.parameters() if parameter.requires_grad]


def _train(
    pipe: Any, req: TrainRequest, latents: Any, embeddings: Any, generator: Any, progress: Any
) -> None:
    torch = importlib.import_module("torch")
    diffusers = importlib.import_module("diffusers")
    noise_scheduler = diffusers.DDPMScheduler.from_config(pipe.scheduler.config)
    unet, device = pipe.unet, pipe.unet.device
    params = _add_lora(unet, req)
    optimizer = torch.optim.AdamW(params, lr=float(Decimal(req.learning_rate)))
    timesteps = noise_scheduler.config.num_train_timesteps
    unet.train()
    order = _order(len(latents), generator)
    for step in range(1, req.steps + 1):
        index = next(order)
        latent, context = latents[index : index + 1], embeddings[index : index + 1]
        noise = torch.randn(latent.shape, generator=generator).to(device)
        t = torch.randint(0, timesteps, (1,), generator=generator).to(device)
        noisy = noise_scheduler.add_noise(latent, noise, t)
        target = noise
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latent, noise, t)
        predicted = unet(noisy, t, encoder_hidden_states=context).sample
        loss = torch.nn.functional.mse_loss(predicted.float(), target.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDiverged(f"the loss became {value} at step {step}; lower the rate")
        if progress is not None:
            progress(step, value)
    unet.eval()


def train_lora(
    req: TrainRequest, *, device: str = "cpu", progress: Progress | None = None
) -> bytes:
    """Train a LoRA for ``req`` and return the ``.safetensors`` file's bytes.

    ``progress(step, loss)`` is called after every step. SDXL bases are refused.
    """
    torch = require_compute()
    if family(req.base_model) == "sdxl":
        raise BadRequest("LoRA training supports SD 1.x and 2.x base models, not SDXL yet")
    from peft.utils import get_peft_model_state_dict

    started = time.time()
    pipe = load_pipeline(req.checkpoint, req.base_model, req.config_root, device, half=False)
    captions = captions_for(req)
    generator = torch.Generator(device="cpu").manual_seed(req.seed)
    latents, embeddings = _encode(pipe, req, captions, generator)
    _train(pipe, req, latents, embeddings, generator, progress)
    weights = kohya_state_dict(get_peft_model_state_dict(pipe.unet), req.alpha)
    v_prediction = pipe.scheduler.config.get("prediction_type") == "v_prediction"
    return safetensors_bytes(weights, lora_metadata(req, captions, started, v_prediction))
