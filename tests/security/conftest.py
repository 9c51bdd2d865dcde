"""Fixtures the security tests share with the compute tests: members, a published
checkpoint, LoRA files."""

from tests.compute.conftest import alice, bob, checkpoint, make_lora  # noqa: F401 (fixtures)
