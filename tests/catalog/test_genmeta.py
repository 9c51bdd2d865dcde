"""Generation metadata: A1111 text and ComfyUI graphs into Civitai's ``meta`` fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from node.catalog.genmeta import (
    MAX_TEXT_BYTES,
    MetadataError,
    MetadataTooLarge,
    format_a1111,
    parse_a1111,
    parse_comfy,
)
from node.errors import CivitasError

# Shaped like what A1111 1.6 + the Civitai extension write: multi-line prompt and negative,
# quoted values with commas, Lora/TI hashes, Hashes JSON, Civitai resources JSON.
REAL_WORLD = (
    "masterpiece, best quality, 1girl, <lora:add_detail:0.6>, <lora:epiNoiseoffset_v2:1>\n"
    "standing in a field, (detailed eyes:1.2), easynegative\n"
    "Negative prompt: easynegative, (worst quality:1.4),\n"
    "lowres, bad anatomy\n"
    "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3141592653, Size: 512x768, "
    "Model hash: 7f96a1a9ca, Model: AOM3, Denoising strength: 0.45, Clip skip: 2, "
    'Hires upscaler: 4x-UltraSharp, ADetailer prompt: "face, smile: 1", '
    'Lora hashes: "add_detail: 7c6bad76eb54, epiNoiseoffset_v2: d1131f7207d6", '
    'TI hashes: "easynegative: c74b4e810b03", '
    'Hashes: {"vae": "c6a580b13a", "model": "7f96a1a9ca", "lora:add_detail": "7c6bad76eb54"}, '
    'Civitai resources: [{"type":"checkpoint","modelVersionId":93208},'
    '{"weight":0.6,"air":"urn:air:sd1:lora:civitai:58390@62833"}], Version: v1.6.0'
)


def test_real_world_a1111() -> None:
    meta = parse_a1111(REAL_WORLD)
    assert meta["prompt"] == (
        "masterpiece, best quality, 1girl, <lora:add_detail:0.6>, <lora:epiNoiseoffset_v2:1>\n"
        "standing in a field, (detailed eyes:1.2), easynegative"
    )
    assert meta["negativePrompt"] == "easynegative, (worst quality:1.4),\nlowres, bad anatomy"
    assert meta["steps"] == 30 and isinstance(meta["steps"], int)
    assert meta["cfgScale"] == 7.5
    assert meta["seed"] == 3141592653
    assert meta["clipSkip"] == 2
    assert meta["sampler"] == "DPM++ 2M Karras"
    assert meta["Size"] == "512x768"
    assert meta["Model"] == "AOM3"
    assert meta["Model hash"] == "7f96a1a9ca"
    assert meta["Denoising strength"] == "0.45"  # Civitai keeps unknown keys as text
    assert meta["ADetailer prompt"] == "face, smile: 1"
    assert meta["Version"] == "v1.6.0"
    assert meta["hashes"] == {
        "vae": "c6a580b13a",
        "model": "7f96a1a9ca",
        "lora:add_detail": "7c6bad76eb54",
        "lora:epiNoiseoffset_v2": "d1131f7207d6",
        "embed:easynegative": "c74b4e810b03",
    }
    assert meta["resources"] == [
        {"name": "add_detail", "type": "lora", "hash": "7c6bad76eb54", "weight": 0.6},
        {"name": "epiNoiseoffset_v2", "type": "lora", "hash": "d1131f7207d6", "weight": 1},
        {"name": "easynegative", "type": "embed", "hash": "c74b4e810b03"},
        {"name": "AOM3", "type": "model", "hash": "7f96a1a9ca"},
    ]
    assert meta["civitaiResources"] == [
        {"type": "checkpoint", "modelVersionId": 93208},
        {
            "weight": 0.6,
            "air": "urn:air:sd1:lora:civitai:58390@62833",
            "type": "lora",
            "modelVersionId": 62833,
        },
    ]
    # Folded into hashes/resources, as Civitai does; never left as raw strings.
    assert "Lora hashes" not in meta and "TI hashes" not in meta and "Hashes" not in meta


def test_format_then_parse_round_trips() -> None:
    meta = parse_a1111(REAL_WORLD)
    again = parse_a1111(format_a1111(meta))
    assert again == meta


def test_format_a1111_shape() -> None:
    meta = {
        "prompt": "a cat, sitting\non a mat",
        "negativePrompt": "blurry",
        "sampler": "Euler a",
        "cfgScale": 7,
        "seed": 42,
        "steps": 20,
        "clipSkip": 2,
        "Size": "512x512",
        "Model": "v1-5-pruned",
        "comfy": "{}",
        "resources": [{"name": "x", "type": "lora"}],
    }
    text = format_a1111(meta)
    assert text == (
        "a cat, sitting\non a mat\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Clip skip: 2, Size: 512x512, "
        "Model: v1-5-pruned"
    )
    parsed = parse_a1111(text)
    for key in ("prompt", "negativePrompt", "sampler", "cfgScale", "seed", "steps", "clipSkip"):
        assert parsed[key] == meta[key]


def test_quoted_values_survive_formatting() -> None:
    meta = {"prompt": "p", "steps": 5, "Wildcard": 'a, b: "c"\nd', "Note": " padded "}
    parsed = parse_a1111(format_a1111(meta))
    assert parsed["Wildcard"] == 'a, b: "c"\nd'
    assert parsed["Note"] == " padded "


def test_prompt_only_and_details_without_steps_first() -> None:
    assert parse_a1111("just a prompt, with: colons") == {"prompt": "just a prompt, with: colons"}
    meta = parse_a1111("a prompt\nSampler: Euler, CFG scale: 5, Seed: 1")
    assert meta == {"prompt": "a prompt", "sampler": "Euler", "cfgScale": 5, "seed": 1}


def test_lines_after_the_details_line_are_ignored() -> None:
    text = "cat\nSteps: 4, Seed: 9, Sampler: Euler\nTemplate: {cat|dog}\nNegative Template: x"
    assert parse_a1111(text) == {"prompt": "cat", "steps": 4, "seed": 9, "sampler": "Euler"}


def test_lora_tags_without_hashes_and_odd_values_are_kept_as_found() -> None:
    meta = parse_a1111("<lora:style one:0.5:0.3> <lyco:thing> <lora:bad:x>\nSteps: many, Seed: ?")
    assert meta["steps"] == "many" and meta["seed"] == "?"
    assert meta["resources"] == [
        {"name": "style one", "type": "lora", "weight": 0.5},
        {"name": "thing", "type": "lora", "weight": 1.0},
        {"name": "bad", "type": "lora"},
    ]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "Negative prompt:",
        'Steps: 1, Hashes: {"a": ',
        'Steps: 1, Lora hashes: "unterminated',
        "Steps: 1, Civitai resources: [1, 2, {}]",
        "Steps: 1, Hashes: " + "[" * 30000,
        "Steps: 1,,,, : , :x, Seed",
    ],
)
def test_odd_a1111_text_never_raises(text: str) -> None:
    assert isinstance(parse_a1111(text), dict)


def test_oversized_text_is_refused() -> None:
    with pytest.raises(MetadataTooLarge) as caught:
        parse_a1111("x" * (MAX_TEXT_BYTES + 1))
    assert isinstance(caught.value, MetadataError) and isinstance(caught.value, CivitasError)
    assert caught.value.code == "metadata_too_large" and caught.value.status == 413
    with pytest.raises(MetadataTooLarge):  # counted in UTF-8 bytes, not characters
        parse_a1111("é" * (MAX_TEXT_BYTES // 2 + 1))


# --- ComfyUI -----------------------------------------------------------------------------


def comfy_graph() -> dict[str, Any]:
    """A txt2img + hires-fix API graph as ComfyUI writes into PNG ``prompt``."""
    return {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "sdxl/sd_xl_base_1.0.safetensors"},
        },
        "10": {
            "class_type": "LoraLoader",
            "inputs": {
                "lora_name": "pixel-art-xl.safetensors",
                "strength_model": 0.8,
                "strength_clip": 1.0,
                "model": ["4", 0],
                "clip": ["4", 1],
            },
        },
        "11": {
            "class_type": "LoraLoader",
            "inputs": {
                "lora_name": "disabled.safetensors",
                "strength_model": 0,
                "strength_clip": 0,
                "model": ["10", 0],
                "clip": ["10", 1],
            },
        },
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a red fox in snow, pixel art", "clip": ["11", 1]},
        },
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["11", 1]}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 832, "height": 1216, "batch_size": 1},
        },
        "12": {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["3", 0], "scale_by": 1.5}},
        "13": {  # the hires pass comes first in the file: it must not be picked
            "class_type": "KSampler",
            "inputs": {
                "seed": 1,
                "steps": 10,
                "cfg": 5,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 0.4,
                "model": ["11", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["12", 0],
            },
        },
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 123456789012,
                "steps": 28,
                "cfg": 6.5,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "denoise": 1,
                "model": ["11", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
    }


WORKFLOW = {"last_node_id": 13, "nodes": [{"id": 3, "type": "KSampler"}], "links": []}


def test_comfy_extraction() -> None:
    graph = comfy_graph()
    meta = parse_comfy(json.dumps(graph), json.dumps(WORKFLOW))
    assert meta["prompt"] == "a red fox in snow, pixel art"
    assert meta["negativePrompt"] == "blurry"
    assert meta["seed"] == 123456789012
    assert meta["steps"] == 28
    assert meta["cfgScale"] == 6.5
    assert meta["sampler"] == "DPM++ 2M Karras"
    assert meta["scheduler"] == "karras"
    assert meta["denoise"] == 1
    assert meta["Size"] == "832x1216" and (meta["width"], meta["height"]) == (832, 1216)
    assert meta["Model"] == "sdxl/sd_xl_base_1.0"
    assert meta["resources"] == [
        {"name": "sdxl/sd_xl_base_1.0", "type": "model"},
        {"name": "pixel-art-xl", "type": "lora", "weight": 0.8},
    ]
    assert meta["additionalResources"] == [
        {"name": "pixel-art-xl.safetensors", "type": "lora", "strength": 0.8, "strengthClip": 1.0}
    ]
    assert json.loads(meta["comfy"]) == {"prompt": graph, "workflow": WORKFLOW}


def test_comfy_follows_links_through_controlnet_and_primitives() -> None:
    graph = comfy_graph()
    graph["20"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "c.pth"}}
    graph["21"] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {"positive": ["6", 0], "negative": ["7", 0], "control_net": ["20", 0]},
    }
    graph["22"] = {"class_type": "Seed (rgthree)", "inputs": {"seed": 77}}
    graph["23"] = {"class_type": "PrimitiveString", "inputs": {"value": "from a string node"}}
    graph["6"]["inputs"]["text"] = ["23", 0]
    sampler = graph["3"]["inputs"]
    sampler.update(positive=["21", 0], negative=["21", 1], seed=["22", 0])
    meta = parse_comfy(json.dumps(graph), None)
    assert meta["prompt"] == "from a string node"
    assert meta["negativePrompt"] == "blurry"
    assert meta["seed"] == 77
    assert json.loads(meta["comfy"])["workflow"] is None


def test_comfy_sdxl_text_encoders() -> None:
    graph = comfy_graph()
    graph["6"] = {
        "class_type": "CLIPTextEncodeSDXL",
        "inputs": {"text_g": "a fox", "text_l": "pixel art", "clip": ["4", 1]},
    }
    assert parse_comfy(json.dumps(graph), None)["prompt"] == "a fox, pixel art"


@pytest.mark.parametrize(
    ("prompt", "workflow"),
    [
        (None, None),
        ("not json", "{"),
        ("[1, 2, 3]", None),
        ('{"1": 5, "2": {"class_type": 3, "inputs": []}}', None),
        (
            '{"1": {"class_type": "KSampler", "inputs": {"positive": ["1", 0], "seed": ["1", 0]}}}',
            None,
        ),
        (
            '{"1": {"class_type": "KSampler", "inputs": {"positive": ["404", 0], "model": [1]}}}',
            None,
        ),
        ('{"1": {"class_type": "KSampler", "inputs": {"cfg": NaN}}}', None),
        (None, "[" * 20000 + "]" * 20000),
    ],
)
def test_odd_comfy_input_never_raises(prompt: str | None, workflow: str | None) -> None:
    meta = parse_comfy(prompt, workflow)
    assert isinstance(meta, dict)
    if "comfy" in meta:
        json.loads(meta["comfy"])  # always valid JSON, NaN included


def test_comfy_cycles_and_huge_graphs_are_bounded() -> None:
    cycle = {
        str(i): {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": [str(i + 1), 0]}}
        for i in range(1, 400)
    }
    cycle["400"] = {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["1", 0]}}
    cycle["0"] = {"class_type": "KSampler", "inputs": {"positive": ["1", 0], "steps": 3}}
    assert parse_comfy(json.dumps(cycle), None)["steps"] == 3

    many: dict[str, Any] = {str(i): {} for i in range(6000)}
    many["6000"] = {"class_type": "KSampler", "inputs": {"steps": 3}}  # past the node cap
    text = json.dumps(many, separators=(",", ":"))
    assert len(text) < MAX_TEXT_BYTES
    meta = parse_comfy(text, None)
    assert "steps" not in meta and "comfy" in meta
    assert parse_comfy("{" + " " * MAX_TEXT_BYTES + "}", None) == {}


def test_comfy_meta_formats_as_a1111() -> None:
    text = format_a1111(parse_comfy(json.dumps(comfy_graph()), None))
    assert text.splitlines()[-1] == (
        "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 123456789012, "
        "Size: 832x1216, Model: sdxl/sd_xl_base_1.0"
    )
