"""Body rules of the catalog's record types: ``model``, ``model_version``, ``image``.

The exact field tables are in ``docs/records.md``. Bodies are open (unknown fields are
kept); what is named here is checked strictly, so that every node projects the same
catalog from the same records.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from node.errors import RecordError, RecordRejected
from node.p2p import schema
from node.p2p.keys import verify_signature

MODEL, MODEL_VERSION, IMAGE, TOMBSTONE = "model", "model_version", "image", "tombstone"

MODEL_TYPES = (
    "Checkpoint",
    "TextualInversion",
    "Hypernetwork",
    "AestheticGradient",
    "LORA",
    "LoCon",
    "DoRA",
    "Controlnet",
    "Upscaler",
    "MotionModule",
    "VAE",
    "Poses",
    "Wildcards",
    "Workflows",
    "Detection",
    "Other",
)
RATINGS = ("PG", "PG13", "R", "X")
COMMERCIAL_USES = ("Image", "RentCivit", "Rent", "Sell")
FILE_FORMATS = ("SafeTensor", "Other")
PRECISIONS = ("fp16", "bf16", "fp32", "fp8")
SIZES = ("pruned", "full")
RESOURCE_TYPES = ("model", "lora", "embed", "vae", "other")
MAX_FILES = 16
MAX_DESCRIPTION = 30_000
# The largest image: published here, served to peers and fetched from them (README "Limits").
MAX_IMAGE_BYTES = 50 * 1024 * 1024


def _one_of(
    body: Mapping[str, Any], key: str, choices: tuple[str, ...], *, required: bool = True
) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if value not in choices:
        raise RecordRejected(f"body.{key} must be one of {', '.join(choices)}")
    return str(value)


def _flag(body: Mapping[str, Any], key: str) -> None:
    if key in body and not isinstance(body[key], bool):
        raise RecordRejected(f"body.{key} must be true or false")


def _count(body: Mapping[str, Any], key: str, *, required: bool = True) -> None:
    value = body.get(key)
    if value is None and not required:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RecordRejected(f"body.{key} must be a non-negative integer")


def _decimal(value: Any, where: str) -> None:
    try:
        ok = isinstance(value, str) and len(value) <= 32 and Decimal(value).is_finite()
    except InvalidOperation:
        ok = False
    if not ok:
        raise RecordRejected(f'{where} must be a decimal string such as "0.8"')


ATTESTATION_DOMAIN = b"civitas-attestation-v1\0"


def attestation_message(sha256: bytes) -> bytes:
    """What a worker key signs for an output: a domain tag, then the output's SHA256."""
    return ATTESTATION_DOMAIN + sha256


def _attestation(body: Mapping[str, Any], sha256: bytes) -> None:
    """Optional ``attestation``: the worker that computed the output signed its SHA256."""
    if "attestation" not in body:
        return
    att = body["attestation"]
    if not isinstance(att, dict):
        raise RecordRejected("body.attestation must be a map")
    worker = schema.text(att, "worker", max_len=64)
    sig = schema.digest(att, "sig", size=64)
    assert worker is not None and sig is not None
    try:
        verify_signature(worker, sig, attestation_message(sha256))
    except (RecordError, ValueError) as exc:
        message = exc.message if isinstance(exc, RecordError) else str(exc)
        raise RecordRejected(f"body.attestation does not verify: {message}") from None


def check_model(body: Mapping[str, Any]) -> None:
    schema.text(body, "name", max_len=200)
    _one_of(body, "type", MODEL_TYPES)
    schema.text(body, "description", max_len=MAX_DESCRIPTION, required=False, min_len=0)
    schema.text_list(body, "tags", max_items=32, max_len=48)
    _one_of(body, "rating", RATINGS, required=False)
    schema.text(body, "license", max_len=200, required=False)
    schema.digest(body, "root", required=False)
    _flag(body, "poi")
    permissions = body.get("permissions", {})
    if not isinstance(permissions, dict):
        raise RecordRejected("body.permissions must be a map")
    for key in ("allow_no_credit", "allow_derivatives", "allow_different_license"):
        _flag(permissions, key)
    uses = schema.text_list(permissions, "allow_commercial_use", max_items=4, max_len=16)
    if any(use not in COMMERCIAL_USES for use in uses):
        raise RecordRejected(
            f"body.permissions.allow_commercial_use items must be of {', '.join(COMMERCIAL_USES)}"
        )


def _check_file(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise RecordRejected(f"{where} must be a map")
    schema.text(item, "name", max_len=255)
    name = item["name"]
    if "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise RecordRejected(f"{where}.name must be a plain file name")
    _count(item, "size")
    schema.digest(item, "sha256")
    schema.digest(item, "blake3")
    schema.digest(item, "crc32", size=4)
    schema.digest(item, "autov1", size=4, required=False)
    schema.digest(item, "autov3", required=False)
    schema.digest(item, "infohash", size=20, required=False)
    _count(item, "piece_length", required=False)
    _one_of(item, "format", FILE_FORMATS)
    _one_of(item, "fp", PRECISIONS, required=False)
    _one_of(item, "size_type", SIZES, required=False)
    _flag(item, "primary")


def check_model_version(body: Mapping[str, Any]) -> None:
    schema.digest(body, "model")
    schema.text(body, "name", max_len=100)
    schema.text(body, "base_model", max_len=64)
    schema.text(body, "description", max_len=MAX_DESCRIPTION, required=False, min_len=0)
    schema.text_list(body, "trained_words", max_items=64, max_len=200)
    files = body.get("files")
    if not isinstance(files, list) or not 0 < len(files) <= MAX_FILES:
        raise RecordRejected(f"body.files must list 1 to {MAX_FILES} files")
    for i, item in enumerate(files):
        _check_file(item, f"body.files[{i}]")
    if len({f["sha256"] for f in files}) != len(files):
        raise RecordRejected("body.files lists the same file twice")
    _attestation(body, files[0]["sha256"])


def check_image(body: Mapping[str, Any]) -> None:
    sha256 = schema.digest(body, "sha256")
    assert sha256 is not None
    _attestation(body, sha256)
    for key in ("width", "height", "size"):
        _count(body, key)
    if body["size"] > MAX_IMAGE_BYTES:
        raise RecordRejected(f"body.size is over the image limit of {MAX_IMAGE_BYTES} bytes")
    schema.text(body, "mime", max_len=32)
    if body["mime"] not in ("image/png", "image/jpeg", "image/webp"):
        raise RecordRejected("body.mime must be image/png, image/jpeg or image/webp")
    _one_of(body, "rating", RATINGS, required=False)
    schema.digest(body, "model_version", required=False)
    schema.digest(body, "pdq", required=False)
    _count(body, "pdq_quality", required=False)
    meta = body.get("meta", {})
    if not isinstance(meta, dict):
        raise RecordRejected("body.meta must be a map")
    resources = body.get("resources", [])
    if not isinstance(resources, list) or len(resources) > 64:
        raise RecordRejected("body.resources must list at most 64 resources")
    for i, res in enumerate(resources):
        where = f"body.resources[{i}]"
        if not isinstance(res, dict):
            raise RecordRejected(f"{where} must be a map")
        schema.text(res, "name", max_len=255, required=False)
        _one_of(res, "type", RESOURCE_TYPES, required=False)
        schema.text(res, "hash", max_len=64, required=False)
        if "weight" in res:
            _decimal(res["weight"], f"{where}.weight")


def check_tombstone(body: Mapping[str, Any]) -> None:
    schema.digest(body, "target")
    schema.text(body, "reason", max_len=2000, required=False)
