"""A leased job as the ML side's request objects (torch-free).

The worker builds the request it runs from the lease; the node builds the same request
to check a result (the exact ``parameters`` text each image must carry), so both agree
by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from node.compute.parameters import format_parameters
from node.compute.specs import GenerateRequest, LoraSpec, TrainRequest

NOWHERE = Path("/nonexistent")  # the node checks text, it never opens the files


def _stem(name: str) -> str:
    return PurePath(name).stem or name


def generate_request(
    lease: Mapping[str, Any],
    paths: Mapping[str, Path] | None = None,
    config_root: Path = NOWHERE,
    progress: Callable[[int, int], None] | None = None,
) -> GenerateRequest:
    """The generation ``lease`` describes, with its files at ``paths`` (by SHA256)."""
    p = lease["params"]
    files = lease["files"]
    where = paths or {}
    base = files[0]
    loras = [
        LoraSpec(
            path=where.get(f["sha256"], NOWHERE),
            sha256=f["sha256"],
            name=_stem(f["name"]),
            autov2=f["autov2"],
            weight=f["weight"],
            model_version_id=f["model_version_id"],
            model_name=f["model_name"],
            version_name=f["version_name"],
        )
        for f in files
        if f["role"] == "lora"
    ]
    return GenerateRequest(
        checkpoint=where.get(base["sha256"], NOWHERE),
        checkpoint_sha256=base["sha256"],
        base_model=base["base_model"],
        config_root=config_root,
        model_name=_stem(base["name"]),
        model_hash=base["autov2"],
        prompt=p["prompt"],
        negative_prompt=p["negative_prompt"],
        seed=p["seed"],
        steps=p["steps"],
        cfg_scale=p["cfg_scale"],
        sampler=p["sampler"],
        width=p["width"],
        height=p["height"],
        count=p["count"],
        loras=loras,
        checkpoint_version_id=base["model_version_id"],
        checkpoint_model_name=base["model_name"],
        checkpoint_version_name=base["version_name"],
        progress=progress,
    )


def expected_parameters(lease: Mapping[str, Any]) -> list[str]:
    """The ``parameters`` text of each image the generation job must return, in order."""
    req = generate_request(lease)
    return [format_parameters(req, seed=req.seed + i) for i in range(req.count)]


def train_request(
    lease: Mapping[str, Any],
    paths: Mapping[str, Path],
    config_root: Path,
    images: Sequence[tuple[bytes, str]],
) -> TrainRequest:
    p = lease["params"]
    base = lease["files"][0]
    return TrainRequest(
        checkpoint=paths[base["sha256"]],
        checkpoint_sha256=base["sha256"],
        base_model=base["base_model"],
        config_root=config_root,
        images=images,
        trigger_word=p["trigger_word"],
        output_name=p["name"],
        steps=p["steps"],
        rank=p["rank"],
        alpha=p["rank"],
        learning_rate=p["learning_rate"],
        resolution=p["resolution"],
        seed=p["seed"],
    )
