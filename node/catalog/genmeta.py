"""Generation metadata (A1111 ``parameters`` text, ComfyUI graphs) in Civitai's ``meta`` shape.

Civitai clients read how an image was made from ``/api/v1/images`` under Civitai's field
names (``prompt``, ``negativePrompt``, ``steps``, ``cfgScale``, ``seed``, ``sampler``,
``clipSkip``, ``Size``, ``Model``, ``hashes``, ``resources``, ``comfy`` …), so we parse into
that shape; other A1111 keys pass through verbatim, as on Civitai. Pure functions over
untrusted text: bounded in size and work, lenient (odd input yields what was found).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

from node.errors import CivitasError

MAX_TEXT_BYTES = 64 * 1024
MAX_GRAPH_NODES = 5000
_MAX_WALK = 5000  # nodes one link-following walk may visit

# A1111 detail keys Civitai renames; the values of the numeric ones become numbers.
_A1111_TO_META = dict(Steps="steps", Sampler="sampler", Seed="seed")
_A1111_TO_META.update({"CFG scale": "cfgScale", "Clip skip": "clipSkip"})
_META_TO_A1111 = {v: k for k, v in _A1111_TO_META.items()}
_NUMERIC = frozenset({"steps", "cfgScale", "seed", "clipSkip"})
# Keys format_a1111 leaves out: structured data written separately, or Civitai-only fields.
_NOT_DETAILS = frozenset(
    "prompt negativePrompt steps hashes resources civitaiResources extra comfy scheduler "
    "denoise width height models vaes upscalers controlNets additionalResources versionIds "
    "modelIds other external".split()
)
_JSON_KEYS = frozenset({"Hashes", "Civitai resources", "Civitai metadata"})

_KEY = re.compile(r"\s*([A-Za-z][\w \-/.()+]*):\s*")
_SAFE_KEY = re.compile(r"[A-Za-z][\w \-/.()+]*\Z")
_INT = re.compile(r"[+-]?\d+\Z")
_EXTRA_NET = re.compile(r"<(lora|lyco):([^:<>\n]+)(?::([^:<>\n]*))?(?::[^<>\n]*)?>")
_AIR = re.compile(r"urn:air:[^:]+:([^:]+):[^:]+:(\d+)(?:@(\d+))?")
_DECODER = json.JSONDecoder()


class MetadataError(CivitasError):
    """Generation metadata was refused."""

    code = "metadata_invalid"


class MetadataTooLarge(MetadataError):
    code = "metadata_too_large"
    status = 413


def _oversized(text: str) -> bool:
    return len(text) > MAX_TEXT_BYTES or len(text.encode("utf-8", "replace")) > MAX_TEXT_BYTES


def _number(value: Any) -> Any:
    """Civitai serves these as numbers; a value that is not one is kept as given."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return int(text) if _INT.match(text) else float(text)
    except ValueError:
        return value


# --- A1111 -------------------------------------------------------------------------------


def _scan_value(line: str, pos: int, key: str) -> tuple[Any, int]:
    """One value at ``pos``: a JSON-quoted string, raw JSON (Hashes…), or text to the comma."""
    if line.startswith('"', pos):
        try:
            return _DECODER.raw_decode(line, pos)
        except (ValueError, RecursionError):
            end = line.find('"', pos + 1)
            if end >= 0:
                return line[pos + 1 : end], end + 1
    elif key in _JSON_KEYS or line.startswith(("{", "["), pos):
        try:
            value, end = _DECODER.raw_decode(line, pos)
            if isinstance(value, dict | list):
                return value, end
        except (ValueError, RecursionError):
            pass
    end = line.find(",", pos)
    end = len(line) if end < 0 else end
    return line[pos:end].strip(), end


def _scan_details(line: str, strict: bool) -> list[tuple[str, Any]] | None:
    """``Key: value, Key: value`` pairs. Strict: ``None`` unless the whole line is pairs."""
    pairs: list[tuple[str, Any]] = []
    pos, size = 0, len(line)
    while pos < size:
        match = _KEY.match(line, pos)
        if match is not None:
            key = match.group(1).strip()
            value, pos = _scan_value(line, match.end(), key)
            pairs.append((key, value))
            while pos < size and line[pos] in " \t":
                pos += 1
            if pos < size and line[pos] == ",":
                pos += 1
                continue
        if pos >= size or not line[pos:].strip():
            break
        if strict:
            return None
        comma = line.find(",", pos)
        pos = size if comma < 0 else comma + 1
    return pairs


def _name_hashes(value: Any) -> dict[str, str]:
    """``"name: hash, other: hash"`` (or an already-parsed object) as a dict."""
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    found: dict[str, str] = {}
    for part in str(value).split(","):
        name, sep, digest = part.rpartition(":")
        if sep and name.strip() and digest.strip():
            found[name.strip()] = digest.strip()
    return found


Resources = dict[tuple[str, str], dict[str, Any]]


def _add(found: Resources, kind: str, name: str, digest: Any = None, weight: Any = None) -> None:
    """One ``resources`` entry per (type, name); the first hash and weight seen win."""
    entry = found.setdefault((kind, name), {"name": name, "type": kind})
    if digest:
        entry.setdefault("hash", str(digest))
    if weight is not None:
        entry.setdefault("weight", weight)


def _civitai_resources(value: Any) -> list[dict[str, Any]]:
    """Keep the objects; fill ``type``/``modelVersionId`` from an AIR as Civitai does."""
    items = [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
    for item in items:
        match = _AIR.match(str(item.get("air", "")))
        if match:
            item.setdefault("type", match.group(1))
            if match.group(3):
                item.setdefault("modelVersionId", int(match.group(3)))
    return items


def _find_details(lines: list[str]) -> tuple[int, list[tuple[str, Any]]]:
    """Index and pairs of the details line: the last ``Steps:`` line, else a last line of
    three or more pairs (A1111's own rule); ``(len(lines), [])`` when there is none."""
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Steps: "):
            return index, _scan_details(lines[index], strict=False) or []
    if lines:
        pairs = _scan_details(lines[-1], strict=True)
        if pairs is not None and len(pairs) >= 3:
            return len(lines) - 1, pairs
    return len(lines), []


def parse_a1111(text: str) -> dict[str, Any]:
    """Parse A1111's ``parameters`` text into Civitai ``meta`` fields.

    Raises :class:`MetadataTooLarge` over 64 KiB; otherwise returns what it found.
    """
    if _oversized(text):
        raise MetadataTooLarge(f"generation metadata is over {MAX_TEXT_BYTES} bytes")
    lines = text.replace("\r\n", "\n").strip().split("\n")
    end, pairs = _find_details(lines)
    head = lines[:end]
    neg = next((i for i, line in enumerate(head) if line.startswith("Negative prompt:")), None)
    meta: dict[str, Any] = {"prompt": "\n".join(head if neg is None else head[:neg]).strip()}
    if neg is not None:
        negative = [head[neg][len("Negative prompt:") :], *head[neg + 1 :]]
        meta["negativePrompt"] = "\n".join(negative).strip()

    hashes: dict[str, str] = {}
    lora_hashes: dict[str, str] = {}
    ti_hashes: dict[str, str] = {}
    for key, value in pairs:
        if key == "Hashes" and isinstance(value, dict):
            hashes.update((str(k), str(v)) for k, v in value.items())
        elif key == "Civitai resources":
            meta["civitaiResources"] = _civitai_resources(value)
        elif key == "Civitai metadata":
            if isinstance(value, dict) and value:
                meta["extra"] = value
        elif key == "Lora hashes":
            lora_hashes = _name_hashes(value)
        elif key == "TI hashes":
            ti_hashes = _name_hashes(value)
        elif key == "VAE hash":
            hashes.setdefault("vae", str(value))
        else:
            name = _A1111_TO_META.get(key, key)
            meta[name] = _number(value) if name in _NUMERIC else value

    model = meta.get("Model")
    model_hash = meta.get("Model hash") or hashes.get("model")
    if meta.get("Model hash"):
        hashes.setdefault("model", str(meta["Model hash"]))
    hashes.update((f"lora:{n}", h) for n, h in lora_hashes.items() if f"lora:{n}" not in hashes)
    hashes.update((f"embed:{n}", h) for n, h in ti_hashes.items() if f"embed:{n}" not in hashes)

    resources: Resources = {}
    for match in _EXTRA_NET.finditer(meta["prompt"]):
        name = match.group(2).strip()
        weight = _number(match.group(3)) if match.group(3) is not None else 1.0
        weight = weight if isinstance(weight, int | float) else None
        _add(resources, "lora", name, lora_hashes.get(name), weight)
    for name, digest in lora_hashes.items():
        _add(resources, "lora", name, digest)
    for name, digest in ti_hashes.items():
        _add(resources, "embed", name, digest)
    if model or model_hash:
        _add(resources, "model", str(model or ""), model_hash)
    for key, digest in hashes.items():
        kind, _, name = key.partition(":")
        if kind in ("lora", "embed") and name:
            _add(resources, kind, name, digest)
    if hashes:
        meta["hashes"] = hashes
    if resources:
        meta["resources"] = list(resources.values())
    return meta


def a1111_value(value: Any) -> str:
    """A1111's rule: a value with a comma, colon or newline is written as a JSON string; so
    is an empty or padded one, which would not read back as written."""
    text = str(value)
    if not text or text != text.strip() or any(c in text for c in ',:\n"') or text[:1] in "{[":
        return json.dumps(text, ensure_ascii=False)
    return text


def format_a1111(meta: Mapping[str, Any]) -> str:
    """The inverse of :func:`parse_a1111`: the text A1111's "copy generation data" gives."""
    lines = [str(meta.get("prompt") or "")]
    if meta.get("negativePrompt") is not None:  # an empty one too: parsing gives it back
        lines.append(f"Negative prompt: {meta['negativePrompt']}")
    fields: list[tuple[str, str]] = []
    if meta.get("steps") is not None:
        fields.append(("Steps", a1111_value(meta["steps"])))
    for key, value in meta.items():
        name = _META_TO_A1111.get(key, key)
        if key in _NOT_DETAILS or value is None or isinstance(value, Mapping | list):
            continue
        if _SAFE_KEY.match(name) and name not in ("Lora hashes", "TI hashes", *_JSON_KEYS):
            fields.append((name, a1111_value(value)))
    if "Size" not in meta and isinstance(meta.get("width"), int) and meta.get("height"):
        fields.append(("Size", f"{meta['width']}x{meta['height']}"))
    raw_hashes = meta.get("hashes")
    hashes = raw_hashes if isinstance(raw_hashes, Mapping) else {}
    for prefix, name in (("lora:", "Lora hashes"), ("embed:", "TI hashes")):
        pairs = [f"{k[len(prefix) :]}: {v}" for k, v in hashes.items() if k.startswith(prefix)]
        if pairs:
            fields.append((name, json.dumps(", ".join(pairs), ensure_ascii=False)))
    for name, value in (
        ("Hashes", dict(hashes)),
        ("Civitai resources", meta.get("civitaiResources")),
        ("Civitai metadata", meta.get("extra")),
    ):
        if value:
            fields.append((name, json.dumps(value, ensure_ascii=False, separators=(",", ":"))))
    if fields:
        lines.append(", ".join(f"{k}: {v}" for k, v in fields))
    return "\n".join(lines)


# --- ComfyUI -----------------------------------------------------------------------------

_SAMPLER_NODES = ("KSampler", "KSamplerAdvanced", "KSampler (Efficient)")
# ComfyUI sampler names to the A1111 names Civitai shows (Civitai's samplerMap).
_COMFY_SAMPLERS = dict(
    pair.split("=")
    for pair in "euler_ancestral=Euler a;euler=Euler;lms=LMS;heun=Heun;dpm_2=DPM2;"
    "dpm_2_ancestral=DPM2 a;dpmpp_2s_ancestral=DPM++ 2S a;dpmpp_2m=DPM++ 2M;dpmpp_sde=DPM++ SDE;"
    "dpmpp_sde_gpu=DPM++ SDE;dpmpp_2m_sde=DPM++ 2M SDE;dpm_fast=DPM fast;"
    "dpm_adaptive=DPM adaptive;ddim=DDIM;uni_pc=UniPC;uni_pc_bh2=UniPC;lcm=LCM".split(";")
)
_KARRAS = frozenset("lms dpm_2 dpm_2_ancestral dpmpp_2s_ancestral dpmpp_2m dpmpp_sde".split())
_CHECKPOINTS = ("CheckpointLoaderSimple", "CheckpointLoader")
_CONDITIONING = ("conditioning", "conditioning_1", "conditioning_to", "conditioning_2")

Graph = dict[str, dict[str, Any]]


def _load_json(text: str | None) -> Any:
    if not isinstance(text, str) or _oversized(text):
        return None
    try:  # NaN/Infinity (ComfyUI writes them) become null so the result is valid JSON
        return json.loads(text, parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        return None


def _is_link(value: Any) -> bool:
    """``[node_id, output_index]``: how an API graph input points at another node."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _inputs(node: Any) -> dict[str, Any]:
    inputs = node.get("inputs") if isinstance(node, dict) else None
    return inputs if isinstance(inputs, dict) else {}


def _class(node: Any) -> str:
    kind = node.get("class_type") if isinstance(node, dict) else None
    return kind if isinstance(kind, str) else ""


def _walk(graph: Graph, start: Any, follow: Iterable[str]) -> Iterable[dict[str, Any]]:
    """Nodes reachable from link ``start`` through the ``follow`` inputs, each once, bounded."""
    follow = tuple(follow)
    stack, seen = [start], set[str]()
    while stack and len(seen) < _MAX_WALK:
        link = stack.pop()
        if not _is_link(link) or str(link[0]) in seen:
            continue
        seen.add(str(link[0]))
        node = graph.get(str(link[0]))
        if node is None:
            continue
        yield node
        inputs = _inputs(node)
        stack.extend(inputs[k] for k in reversed(follow) if k in inputs)


def _scalar(graph: Graph, value: Any, names: tuple[str, ...], kind: type | tuple[type, ...]) -> Any:
    """A widget value, following links to primitive/seed nodes that hold it."""
    for _ in range(16):
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
        if not _is_link(value):
            return None
        inputs = _inputs(graph.get(str(value[0])))
        value = next((inputs[n] for n in names if n in inputs), None)
    return None


def _text(graph: Graph, start: Any, target: str) -> str | None:
    """The prompt behind a conditioning link (through ControlNet/combine nodes)."""
    keys = (target, *_CONDITIONING, "text", "string")
    for node in _walk(graph, start, keys):
        inputs = _inputs(node)
        for key in ("populated_text", "text", f"text_{target}", "string", "value"):
            if isinstance(inputs.get(key), str) and (inputs[key] or key == "text"):
                return str(inputs[key])
        text_g, text_l = inputs.get("text_g"), inputs.get("text_l")
        if isinstance(text_g, str):  # SDXL: Civitai joins the two encoders' prompts
            if isinstance(text_l, str) and text_l not in ("", text_g):
                return f"{text_g}, {text_l}"
            return text_g
    return None


def _stem(name: str) -> str:
    return re.sub(r"\.[^/\\.]+$", "", name)


def _sampler_name(sampler: str, scheduler: Any) -> str:
    name = _COMFY_SAMPLERS.get(sampler, sampler)
    return f"{name} Karras" if scheduler == "karras" and sampler in _KARRAS else name


def _pick_sampler(graph: Graph) -> dict[str, Any] | None:
    """The first-pass sampler: the one fed an empty latent, as Civitai picks it."""
    samplers = [n for n in graph.values() if _class(n) in _SAMPLER_NODES]
    for node in samplers:
        latent = _inputs(node).get("latent_image")
        kind = _class(graph.get(str(latent[0]))) if latent and _is_link(latent) else ""
        if kind.startswith("Empty") and "Latent" in kind:
            return node
    return samplers[0] if samplers else None


def _from_graph(graph: Graph) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    resources: Resources = {}
    models: list[str] = []
    additional: list[dict[str, Any]] = []  # Civitai's LoRA list for ComfyUI images
    for node in graph.values():  # like Civitai, LoRAs anywhere in the graph count
        inputs, kind = _inputs(node), _class(node)
        if kind in _CHECKPOINTS and isinstance(inputs.get("ckpt_name"), str):
            models.append(inputs["ckpt_name"])
        strength = inputs.get("strength_model", 1)
        if kind.startswith("LoraLoader") and isinstance(inputs.get("lora_name"), str):
            if not isinstance(strength, int | float) or abs(strength) >= 0.001:
                additional.append({"name": inputs["lora_name"], "type": "lora"})
                additional[-1]["strength"] = strength
                if "strength_clip" in inputs:
                    additional[-1]["strengthClip"] = inputs["strength_clip"]

    sampler = _pick_sampler(graph)
    if sampler is not None:
        inputs = _inputs(sampler)
        positive = _text(graph, inputs.get("positive"), "positive")
        negative = _text(graph, inputs.get("negative"), "negative")
        seed = inputs.get("seed", inputs.get("noise_seed"))
        values = {
            "prompt": positive,
            "negativePrompt": negative,
            "steps": _scalar(graph, inputs.get("steps"), ("steps", "value", "Value"), int),
            "sampler": _scalar(graph, inputs.get("sampler_name"), ("sampler_name",), str),
            "scheduler": _scalar(graph, inputs.get("scheduler"), ("scheduler",), str),
            "cfgScale": _scalar(graph, inputs.get("cfg"), ("cfg", "value", "Value"), (int, float)),
            "seed": _scalar(graph, seed, ("seed", "noise_seed", "value", "Value"), int),
            "denoise": _scalar(graph, inputs.get("denoise"), ("denoise",), (int, float)),
        }
        meta.update((k, v) for k, v in values.items() if v is not None)
        if isinstance(meta.get("sampler"), str):
            meta["sampler"] = _sampler_name(meta["sampler"], meta.get("scheduler"))
        for node in _walk(graph, inputs.get("latent_image"), ("samples", "latent", "pixels")):
            width, height = (
                _scalar(graph, _inputs(node).get(k), (k, "value"), int) for k in ("width", "height")
            )
            if width and height:
                meta.update(width=width, height=height, Size=f"{width}x{height}")
                break
        for node in _walk(graph, inputs.get("model"), ("model",)):
            name = _inputs(node).get("ckpt_name") or _inputs(node).get("unet_name")
            if isinstance(name, str):
                meta["Model"] = _stem(name)
                break
    if "Model" not in meta and models:
        meta["Model"] = _stem(models[0])
    if "Model" in meta:
        _add(resources, "model", meta["Model"])
    for lora in additional:
        weight = lora["strength"] if isinstance(lora["strength"], int | float) else None
        _add(resources, "lora", _stem(lora["name"]), weight=weight)
    if models:
        meta["models"] = models
    if additional:
        meta["additionalResources"] = additional
    if resources:
        meta["resources"] = list(resources.values())
    return meta


def parse_comfy(prompt_json: str | None, workflow_json: str | None) -> dict[str, Any]:
    """Read ComfyUI's PNG ``prompt`` (API graph) and ``workflow`` chunks; never raises.

    Fields come from the first-pass sampler and the nodes its inputs link to; the raw
    graphs are kept under ``comfy`` as a JSON string, as Civitai serves them. A chunk
    over 64 KiB or not JSON is ignored.
    """
    prompt, workflow = _load_json(prompt_json), _load_json(workflow_json)
    meta: dict[str, Any] = {}
    if isinstance(prompt, dict):
        graph = {
            str(k): v for k, v in islice(prompt.items(), MAX_GRAPH_NODES) if isinstance(v, dict)
        }
        meta = _from_graph(graph)
    if prompt is not None or workflow is not None:
        try:
            meta["comfy"] = json.dumps({"prompt": prompt, "workflow": workflow}, allow_nan=False)
        except (ValueError, RecursionError):
            pass
    return meta
