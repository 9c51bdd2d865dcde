"""A1111 sampler names and the diffusers schedulers that stand in for them.

Civitai and A1111 name samplers after k-diffusion ("Euler a", "DPM++ 2M Karras"); the
table follows diffusers' own A1111 equivalence list (docs, "Schedulers"). The names are
plain strings so the queue can validate a request without torch; diffusers is imported
only by :func:`make_scheduler`, on the worker.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from node.errors import BadRequest


@dataclass(frozen=True)
class SamplerChoice:
    """A diffusers scheduler class (by name) and the options that make it the sampler."""

    scheduler: str
    options: Mapping[str, Any] = field(default_factory=dict)


_KARRAS = {"use_karras_sigmas": True}
_SDE = {"algorithm_type": "sde-dpmsolver++"}

_TABLE: dict[str, SamplerChoice] = {
    "Euler": SamplerChoice("EulerDiscreteScheduler"),
    "Euler a": SamplerChoice("EulerAncestralDiscreteScheduler"),
    "Heun": SamplerChoice("HeunDiscreteScheduler"),
    "LMS": SamplerChoice("LMSDiscreteScheduler"),
    "LMS Karras": SamplerChoice("LMSDiscreteScheduler", _KARRAS),
    "DPM2": SamplerChoice("KDPM2DiscreteScheduler"),
    "DPM2 Karras": SamplerChoice("KDPM2DiscreteScheduler", _KARRAS),
    "DPM2 a": SamplerChoice("KDPM2AncestralDiscreteScheduler"),
    "DPM2 a Karras": SamplerChoice("KDPM2AncestralDiscreteScheduler", _KARRAS),
    "DPM++ 2M": SamplerChoice("DPMSolverMultistepScheduler"),
    "DPM++ 2M Karras": SamplerChoice("DPMSolverMultistepScheduler", _KARRAS),
    "DPM++ 2M SDE": SamplerChoice("DPMSolverMultistepScheduler", _SDE),
    "DPM++ 2M SDE Karras": SamplerChoice("DPMSolverMultistepScheduler", {**_SDE, **_KARRAS}),
    "DPM++ SDE": SamplerChoice("DPMSolverSinglestepScheduler"),
    "DPM++ SDE Karras": SamplerChoice("DPMSolverSinglestepScheduler", _KARRAS),
    "DDIM": SamplerChoice("DDIMScheduler"),
    "PLMS": SamplerChoice("PNDMScheduler"),
    "PNDM": SamplerChoice("PNDMScheduler"),
    "UniPC": SamplerChoice("UniPCMultistepScheduler"),
}

SAMPLERS: tuple[str, ...] = tuple(_TABLE)
# Schedulers diffusers only offers with an optional package installed.
_NEEDS = {"LMSDiscreteScheduler": "scipy"}


class UnknownSampler(BadRequest, ValueError):
    """A sampler name outside :data:`SAMPLERS`."""

    code = "unknown_sampler"


def sampler_choice(name: str) -> SamplerChoice:
    """The scheduler for A1111 sampler ``name``; :class:`UnknownSampler` lists the known."""
    choice = _TABLE.get(name)
    if choice is None:
        raise UnknownSampler(f"unknown sampler {name!r}; known samplers: {', '.join(SAMPLERS)}")
    return choice


def make_scheduler(name: str, base_config: Mapping[str, Any]) -> Any:
    """A fresh diffusers scheduler for ``name`` from the model's own scheduler config.

    Always built from the checkpoint's original config, never from the previous job's
    scheduler, so one job's options (Karras sigmas, SDE) cannot leak into the next.
    """
    choice = sampler_choice(name)
    needed = _NEEDS.get(choice.scheduler)
    if needed and importlib.util.find_spec(needed) is None:
        raise BadRequest(f"sampler {name!r} needs {needed}: pip install {needed}")
    diffusers = importlib.import_module("diffusers")
    scheduler_class = getattr(diffusers, choice.scheduler)
    return scheduler_class.from_config(dict(base_config), **choice.options)
