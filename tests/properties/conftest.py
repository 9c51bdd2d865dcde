"""Hypothesis settings for the property tests: no example database on disk, no deadline
(the shared machines are slow), and a fixed seed under CI so that a run is repeatable."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "civitas",
    database=None,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("civitas")
