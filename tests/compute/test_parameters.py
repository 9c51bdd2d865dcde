"""The A1111 ``parameters`` text and PNG chunk, sampler names and request checks (no torch)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from node.catalog.genmeta import parse_a1111
from node.compute import pipelines
from node.compute.parameters import civitai_resources, format_parameters, png_with_parameters
from node.compute.samplers import SAMPLERS, UnknownSampler, sampler_choice
from node.compute.specs import GenerateRequest, LoraSpec, TrainRequest
from node.errors import BadRequest

SHA = "AB" * 32
LORA_SHA = "CD" * 32


def request(**changes: Any) -> GenerateRequest:
    fields: dict[str, Any] = dict(
        checkpoint=Path("/models/base.safetensors"),
        checkpoint_sha256=SHA,
        base_model="SD 1.5",
        config_root=Path("/configs"),
        model_name="dream, shaper",
        model_hash=SHA[:10],
        prompt="a fox in a forest,\nwatercolor",
        negative_prompt="blurry, lowres",
        seed=1234,
        steps=20,
        cfg_scale="7.5",
        sampler="DPM++ 2M Karras",
        width=512,
        height=768,
        count=2,
        loras=(
            LoraSpec(
                Path("/models/fox.safetensors"),
                LORA_SHA,
                "fox:style",
                LORA_SHA[:10],
                weight="0.8",
                model_version_id=62833,
                model_name="Fox Style",
                version_name="v1.0",
            ),
            LoraSpec(Path("/models/local.safetensors"), SHA, "local", SHA[:10], weight="-1"),
        ),
        checkpoint_version_id=128713,
        checkpoint_model_name="DreamShaper",
        checkpoint_version_name="8",
    )
    return GenerateRequest(**(fields | changes))


def test_parameters_known_answer() -> None:
    text = format_parameters(request(), seed=1235)
    assert text == (
        "a fox in a forest,\nwatercolor\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1235, Size: 512x768, "
        'Model hash: ababababab, Model: "dream, shaper", '
        'Lora hashes: "fox style: cdcdcdcdcd, local: ababababab", '
        'Civitai resources: [{"type":"checkpoint","modelVersionId":128713,'
        '"modelName":"DreamShaper","modelVersionName":"8"},{"type":"lora","weight":0.8,'
        '"modelVersionId":62833,"modelName":"Fox Style","modelVersionName":"v1.0"}], '
        "Version: civitas"
    )


def test_parameters_round_trip_through_genmeta() -> None:
    req = request()
    meta = parse_a1111(format_parameters(req, seed=99))
    assert meta["prompt"] == "a fox in a forest,\nwatercolor"
    assert meta["negativePrompt"] == "blurry, lowres"
    assert (meta["steps"], meta["sampler"], meta["cfgScale"], meta["seed"]) == (
        20,
        "DPM++ 2M Karras",
        7.5,
        99,
    )
    assert meta["Size"] == "512x768"
    assert meta["Model"] == "dream, shaper"
    assert meta["Model hash"] == "ababababab"
    assert meta["hashes"] == {
        "model": "ababababab",
        "lora:fox style": "cdcdcdcdcd",
        "lora:local": "ababababab",
    }
    assert meta["civitaiResources"] == civitai_resources(req)
    assert meta["Version"] == "civitas"
    kinds = {(r["type"], r["name"], r.get("hash")) for r in meta["resources"]}
    assert kinds == {
        ("model", "dream, shaper", "ababababab"),
        ("lora", "fox style", "cdcdcdcdcd"),
        ("lora", "local", "ababababab"),
    }


def test_parameters_without_extras() -> None:
    req = request(negative_prompt="", loras=(), checkpoint_version_id=None, model_name="plain")
    text = format_parameters(req, seed=7)
    assert text.splitlines() == [
        "a fox in a forest,",
        "watercolor",
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 7, Size: 512x768, "
        "Model hash: ababababab, Model: plain, Version: civitas",
    ]
    assert "negativePrompt" not in parse_a1111(text)


def _chunks(png: bytes) -> list[bytes]:
    """The chunk types of a PNG, in order."""
    kinds, pos = [], 8
    while pos < len(png):
        length = int.from_bytes(png[pos : pos + 4], "big")
        kinds.append(png[pos + 4 : pos + 8])
        pos += 12 + length
    return kinds


@pytest.mark.parametrize(("text", "chunk"), [("a cat", b"tEXt"), ("猫 🐈", b"iTXt")])
def test_png_carries_parameters_chunk(text: str, chunk: bytes) -> None:
    image = Image.new("RGB", (16, 8), "teal")
    png = png_with_parameters(image, text)
    assert chunk in _chunks(png)
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.size == (16, 8)
        assert decoded.info["parameters"] == text
    again = png_with_parameters(png, text + "!")  # from bytes: the chunk is replaced
    with Image.open(io.BytesIO(again)) as decoded:
        assert decoded.info["parameters"] == text + "!"
    assert png_with_parameters(image, text) == png


def test_sampler_names() -> None:
    for name in ("Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "PNDM", "LMS"):
        assert name in SAMPLERS
    assert sampler_choice("DPM++ 2M Karras").scheduler == "DPMSolverMultistepScheduler"
    assert sampler_choice("DPM++ 2M Karras").options == {"use_karras_sigmas": True}
    assert sampler_choice("Euler a").scheduler == "EulerAncestralDiscreteScheduler"
    assert sampler_choice("Heun").options == {}


def test_unknown_sampler_lists_known() -> None:
    with pytest.raises(UnknownSampler) as caught:
        sampler_choice("Euler b")
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, BadRequest)
    assert "Euler a" in caught.value.message and "DPM++ 2M Karras" in caught.value.message


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"sampler": "Euler b"}, "unknown sampler"),
        ({"cfg_scale": "seven"}, "CFG scale"),
        ({"cfg_scale": "NaN"}, "CFG scale"),
        ({"width": 500}, "multiple of 8"),
        ({"height": 8}, "height"),
        ({"steps": 0}, "steps"),
        ({"count": 0}, "image count"),
        ({"model_hash": "xyz"}, "AutoV2"),
        ({"checkpoint_sha256": "00"}, "sha256"),
        ({"seed": -1}, "seed"),
    ],
)
def test_generate_request_refuses(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        request(**changes)


def test_lora_spec_refuses_bad_weight() -> None:
    lora = request().loras[0]
    with pytest.raises(BadRequest, match="weight"):
        replace(lora, weight="lots")


def test_train_request_refuses() -> None:
    base: dict[str, Any] = dict(
        checkpoint=Path("/m.safetensors"),
        checkpoint_sha256=SHA,
        base_model="SD 1.5",
        config_root=Path("/c"),
        images=[(b"png", "caption")],
        trigger_word="zkz",
        output_name="out",
    )
    assert TrainRequest(**base).learning_rate == "1e-4"
    for changes, words in (
        ({"images": []}, "at least one image"),
        ({"learning_rate": "fast"}, "learning rate"),
        ({"resolution": 500}, "multiple of 8"),
        ({"rank": 0}, "rank"),
        ({"output_name": " "}, "output name"),
    ):
        with pytest.raises(BadRequest, match=words):
            TrainRequest(**(base | changes))


def test_resources_are_json_objects() -> None:
    text = format_parameters(request(), seed=1)
    line = text.splitlines()[-1]
    start = line.index("Civitai resources: ") + len("Civitai resources: ")
    resources, _ = json.JSONDecoder().raw_decode(line, start)
    assert [r["type"] for r in resources] == ["checkpoint", "lora"]


def test_compute_modules_import_without_torch() -> None:
    """A node without the compute extras imports these and learns what is missing."""
    code = (
        "import sys\n"
        "import node.compute.pipelines, node.compute.training, node.compute.tiny\n"
        "import node.compute.lora_check, node.compute.parameters, node.compute.samplers\n"
        "print(sorted({'torch', 'diffusers', 'transformers', 'peft'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_compute_unavailable_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipelines, "_REQUIRED", ("no_such_module_for_civitas",))
    reason = "no_such_module_for_civitas is not installed: pip install 'civitas[compute]'"
    assert pipelines.compute_available() == reason
    with pytest.raises(pipelines.ComputeUnavailable, match="civitas\\[compute\\]") as caught:
        pipelines.require_compute()
    assert caught.value.status == 503
