"""Generation and LoRA training on the tiny SD 1.x model: real diffusers, real peft, CPU."""

from __future__ import annotations

import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from node.catalog.detect import detect
from node.catalog.genmeta import parse_a1111
from node.catalog.safetensors import read_header
from node.compute.lora_check import check_lora
from node.compute.pipelines import (
    PipelineCache,
    compute_available,
    config_slug,
    find_config,
    generate,
)
from node.compute.samplers import make_scheduler
from node.compute.specs import GenerateRequest, LoraSpec
from node.compute.tiny import TinyModel, write_tiny_model
from node.compute.training import train_lora
from node.errors import BadRequest, ConfigError
from tests.compute.conftest import require_extra
from tests.compute.tiny_env import (  # noqa: F401
    TrainedLora,
    compute_env_fixture,
    lora_request,
    small_fixture,
    tiny_fixture,
    tiny_lora_fixture,
)

torch = require_extra("torch")
diffusers = require_extra("diffusers")
require_extra("peft")
load_safetensors = require_extra("safetensors.torch").load
# torch 2.13 tensors and numpy 2 inside diffusers' schedulers: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def request(tiny: TinyModel, **changes: Any) -> GenerateRequest:
    fields: dict[str, Any] = dict(
        checkpoint=tiny.checkpoint,
        checkpoint_sha256=tiny.sha256,
        base_model=tiny.base_model,
        config_root=tiny.config_root,
        model_name="tiny",
        model_hash=tiny.autov2,
        prompt="zkz, a red square",
        negative_prompt="blue",
        seed=42,
        steps=3,
        cfg_scale="7.5",
        sampler="Euler",
        width=64,
        height=64,
    )
    return GenerateRequest(**(fields | changes))


def lora_spec(lora: TrainedLora, weight: str = "1") -> LoraSpec:
    return LoraSpec(lora.path, lora.sha256, "tiny-lora", lora.autov2, weight, 77, "Tiny LoRA", "v1")


def one_png(req: GenerateRequest, cache: PipelineCache) -> bytes:
    return generate(req, cache=cache)[0].png


def pixels(png: bytes) -> Any:
    with Image.open(io.BytesIO(png)) as decoded:
        return np.asarray(decoded)


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache()


# --- the tiny model --------------------------------------------------------------------


def test_tiny_checkpoint_is_detected_as_sd15(tiny: TinyModel) -> None:
    found = detect(read_header(tiny.checkpoint))
    assert (found.model_type, found.base_model) == ("Checkpoint", "SD 1.5")
    assert tiny.config_dir == tiny.config_root / "sd-1.5"
    assert not list(tiny.config_dir.rglob("*.safetensors"))  # configs only


def test_tiny_model_is_reproducible(tiny: TinyModel, tmp_path: Path) -> None:
    again = write_tiny_model(tmp_path)
    assert again.checkpoint.read_bytes() == tiny.checkpoint.read_bytes()
    assert hashlib.sha256(again.checkpoint.read_bytes()).hexdigest().upper() == tiny.sha256


def test_single_file_loads_the_same_weights(tiny: TinyModel) -> None:
    single = diffusers.StableDiffusionPipeline.from_single_file(
        str(tiny.checkpoint), config=str(tiny.config_dir), local_files_only=True
    )
    folder = diffusers.StableDiffusionPipeline.from_pretrained(
        str(tiny.folder), local_files_only=True
    )
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(single, name).state_dict(), getattr(folder, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[key], theirs[key]) for key in ours), name
    images = [
        pipe(
            "a cat",
            num_inference_steps=2,
            width=32,
            height=32,
            output_type="np",
            generator=torch.Generator().manual_seed(3),
        ).images
        for pipe in (single, folder)
    ]
    assert np.array_equal(images[0], images[1])


def test_find_config(tiny: TinyModel, tmp_path: Path) -> None:
    assert config_slug("SD 1.5") == "sd-1.5" and config_slug("SDXL 1.0") == "sdxl-1.0"
    assert find_config(tiny.config_root, "SD 1.5") == tiny.config_dir
    assert find_config(tiny.config_root, "SD 1.4") == tiny.config_dir  # the family's folder
    with pytest.raises(ConfigError, match=r"sdxl-1\.0/model_index\.json; found sd-1\.5"):
        find_config(tiny.config_root, "Pony")
    with pytest.raises(ConfigError, match="found none"):
        find_config(tmp_path, "SD 1.5")
    with pytest.raises(BadRequest, match=r"cannot run base model 'Flux\.1 D'"):
        find_config(tiny.config_root, "Flux.1 D")
    assert compute_available() is None


# --- generation ------------------------------------------------------------------------


def test_generate_pngs_with_parameters(tiny: TinyModel, cache: PipelineCache) -> None:
    progress: list[tuple[int, int]] = []
    req = request(tiny, count=2, width=64, height=96, progress=lambda *a: progress.append(a))
    images = generate(req, cache=cache)
    assert [(i.seed, i.width, i.height) for i in images] == [(42, 64, 96), (43, 64, 96)]
    assert progress == [(step, 6) for step in range(1, 7)]
    for image in images:
        with Image.open(io.BytesIO(image.png)) as decoded:
            assert (decoded.format, decoded.size, decoded.mode) == ("PNG", (64, 96), "RGB")
            meta = parse_a1111(decoded.info["parameters"])
        assert meta["prompt"] == "zkz, a red square" and meta["negativePrompt"] == "blue"
        assert (meta["seed"], meta["steps"], meta["cfgScale"]) == (image.seed, 3, 7.5)
        assert (meta["sampler"], meta["Size"]) == ("Euler", "64x96")
        assert meta["Model hash"] == tiny.autov2.lower()
    assert images[0].png != images[1].png


def test_same_seed_same_bytes(tiny: TinyModel, cache: PipelineCache) -> None:
    first = one_png(request(tiny, sampler="Euler a"), cache)
    assert one_png(request(tiny, sampler="Euler a"), cache) == first
    assert one_png(request(tiny, sampler="Euler a", seed=43), cache) != first
    # image i of a batch is image 0 of a job seeded seed + i, as in A1111
    batch = generate(request(tiny, sampler="Euler a", seed=41, count=2), cache=cache)
    assert batch[1].png == first


def test_cache_reuses_and_evicts(tiny: TinyModel) -> None:
    cache = PipelineCache(capacity=1)
    key = (tiny.checkpoint, tiny.sha256, tiny.base_model, tiny.config_root, "cpu")
    loaded = cache.get(*key)
    single_file_png = one_png(request(tiny), cache)
    assert cache.get(*key) is loaded and len(cache) == 1
    folder = request(tiny, checkpoint=tiny.folder)  # the same weights as a diffusers folder
    assert one_png(folder, cache) == single_file_png
    assert len(cache) == 1 and cache.get(*key) is not loaded


def test_samplers_build_from_the_base_config(tiny: TinyModel, cache: PipelineCache) -> None:
    base = cache.get(tiny.checkpoint, tiny.sha256, tiny.base_model, tiny.config_root, "cpu")
    karras = make_scheduler("DPM++ 2M Karras", base.scheduler_config)
    assert type(karras).__name__ == "DPMSolverMultistepScheduler"
    assert karras.config.use_karras_sigmas is True
    assert make_scheduler("DPM++ 2M SDE", base.scheduler_config).config.algorithm_type == (
        "sde-dpmsolver++"
    )
    one_png(request(tiny, sampler="DPM++ 2M Karras"), cache)
    plain = make_scheduler("DPM++ 2M", base.scheduler_config)
    assert plain.config.use_karras_sigmas is False  # nothing leaks from the Karras job
    outputs = {one_png(request(tiny, sampler=name), cache) for name in ("Euler", "DDIM", "PNDM")}
    assert len(outputs) == 3


def test_unknown_sampler_is_refused(tiny: TinyModel) -> None:
    with pytest.raises(BadRequest, match="unknown sampler 'Euler b'"):
        request(tiny, sampler="Euler b")


def test_lora_changes_output_and_does_not_leak(
    tiny: TinyModel, tiny_lora: TrainedLora, cache: PipelineCache
) -> None:
    plain = one_png(request(tiny), cache)
    with_lora = one_png(request(tiny, loras=[lora_spec(tiny_lora)]), cache)
    assert with_lora != plain
    assert one_png(request(tiny), cache) == plain  # unloaded after the job
    assert one_png(request(tiny, loras=[lora_spec(tiny_lora)]), cache) == with_lora
    at_zero = one_png(request(tiny, loras=[lora_spec(tiny_lora, "0")]), cache)
    assert np.array_equal(pixels(at_zero), pixels(plain))  # the metadata still names it
    with Image.open(io.BytesIO(with_lora)) as decoded:
        meta = parse_a1111(decoded.info["parameters"])
    assert meta["hashes"]["lora:tiny-lora"] == tiny_lora.autov2.lower()
    assert meta["civitaiResources"] == [
        {
            "type": "lora",
            "weight": 1,
            "modelVersionId": 77,
            "modelName": "Tiny LoRA",
            "modelVersionName": "v1",
        }
    ]


def test_lora_for_another_base_is_refused(
    small: TinyModel, tiny_lora: TrainedLora, cache: PipelineCache
) -> None:
    req = request(small)
    plain = one_png(req, cache)
    with pytest.raises(BadRequest, match=r"LoRA 'tiny-lora' cannot be applied .* size mismatch"):
        generate(request(small, loras=[lora_spec(tiny_lora)]), cache=cache)
    assert one_png(req, cache) == plain


# --- training --------------------------------------------------------------------------


def test_trained_lora_file(tiny: TinyModel, tiny_lora: TrainedLora) -> None:
    assert [step for step, _ in tiny_lora.losses] == [1, 2, 3, 4]
    assert all(math.isfinite(loss) and loss > 0 for _, loss in tiny_lora.losses)
    with safe_open(str(tiny_lora.path), "pt") as file:
        meta = file.metadata()
        keys = set(file.keys())
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "2")
    assert meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_new_sd_model_hash"] == tiny.sha256.lower()
    assert meta["civitas_base_sha256"] == tiny.sha256
    assert meta["ss_sd_model_name"] == "model.safetensors"
    assert (meta["ss_steps"], meta["ss_learning_rate"]) == ("4", "1e-2")
    assert meta["ss_resolution"] == "(32, 32)" and meta["ss_output_name"] == "tiny-lora"
    assert json.loads(meta["ss_tag_frequency"]) == {
        "1_zkz": {"zkz": 2, "a red square": 1, "blue": 1, "square": 1}
    }
    assert float(meta["ss_training_started_at"]) <= float(meta["ss_training_finished_at"])
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= keys
    found = detect(read_header(tiny_lora.path))
    assert (found.model_type, found.base_model) == ("LORA", "SD 1.5")
    check_lora(tiny_lora.path, tiny.checkpoint, tiny.sha256)


def test_training_is_deterministic(tiny: TinyModel, tiny_lora: TrainedLora) -> None:
    again = load_safetensors(train_lora(lora_request(tiny)))
    first = load_safetensors(tiny_lora.path.read_bytes())
    assert again.keys() == first.keys()
    assert all(torch.equal(again[key], first[key]) for key in first)
    ups = [tensor for key, tensor in first.items() if key.endswith("lora_up.weight")]
    assert all(tensor.abs().sum() > 0 for tensor in ups)  # trained away from the zero init


def test_diffusers_loads_the_trained_lora(tiny: TinyModel, tiny_lora: TrainedLora) -> None:
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        str(tiny.folder), local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)

    def image() -> Any:
        generator = torch.Generator().manual_seed(5)
        return pipe(
            "zkz", num_inference_steps=2, width=32, height=32, output_type="np", generator=generator
        ).images

    before = image()
    pipe.load_lora_weights(str(tiny_lora.path.parent), weight_name=tiny_lora.path.name)
    assert not np.array_equal(image(), before)


def test_training_refuses_bad_input(tiny: TinyModel) -> None:
    with pytest.raises(BadRequest, match="SDXL"):
        train_lora(lora_request(tiny, base_model="SDXL 1.0"))
    with pytest.raises(BadRequest, match="training image 2 is not a readable image"):
        train_lora(lora_request(tiny, images=[(lora_request(tiny).images[0][0], ""), (b"x", "")]))
