"""Image ingest on images the tests generate: limits, metadata, served copies, previews, PDQ."""

from __future__ import annotations

import hashlib
import io
import json
import random
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from node.catalog import images
from node.catalog.genmeta import format_a1111, parse_a1111
from node.catalog.images import (
    MAX_PIXELS,
    CorruptImage,
    ImageError,
    ImageTooLarge,
    ImageTooManyPixels,
    UnsupportedImage,
    inspect_image,
    pdq_distance,
    resized,
    served_copy,
)
from node.errors import BadRequest, CivitasError

from .test_genmeta import REAL_WORLD, WORKFLOW, comfy_graph

GPS_IFD, EXIF_IFD, USER_COMMENT = 0x8825, 0x8769, 0x9286
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><exif:GPSLatitude>52,22N</exif:GPSLatitude></x:xmpmeta>'


def picture(seed: int, size: tuple[int, int] = (320, 240), mode: str = "RGB") -> Image.Image:
    """A structured image (gradient and shapes), so PDQ has something to see."""
    rng = random.Random(seed)
    width, height = size
    xs, ys = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xs + np.sin(angle) * ys + 1.5) / 3
    rgb = np.stack([ramp * rng.uniform(80, 255) for _ in range(3)], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = (x0, y0, x0 + rng.randrange(8, width // 4), y0 + rng.randrange(8, height // 4))
        fill = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image.convert(mode)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def user_comment(text: str, big_endian: bool = True) -> bytes:
    return b"UNICODE\0" + text.encode("utf-16-be" if big_endian else "utf-16-le")


def exif_with_gps(comment: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Civitas Camera"  # Make
    exif.get_ifd(EXIF_IFD)[USER_COMMENT] = comment
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (52.0, 22.0, 5.0), 3: "E", 4: (4.0, 53.0, 9.0)})
    return exif


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` in a few dozen bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- inspect -----------------------------------------------------------------------------


def test_a1111_png_round_trip() -> None:
    meta = parse_a1111(REAL_WORLD)
    info = PngInfo()
    info.add_text("parameters", format_a1111(meta))
    data = encode(picture(1), "PNG", pnginfo=info)

    got = inspect_image(data)
    assert got.meta == meta
    assert (got.width, got.height, got.format, got.mime) == (320, 240, "PNG", "image/png")
    assert got.sha256 == hashlib.sha256(data).hexdigest().upper() and got.size == len(data)
    assert got.pdq is not None and len(got.pdq) == 32
    assert got.pdq_quality is not None and got.pdq_quality >= 50


def test_comfy_png() -> None:
    info = PngInfo()
    info.add_text("prompt", json.dumps(comfy_graph()))
    info.add_text("workflow", json.dumps(WORKFLOW))
    got = inspect_image(encode(picture(2), "PNG", pnginfo=info))
    assert got.meta is not None
    assert got.meta["prompt"] == "a red fox in snow, pixel art"
    assert got.meta["sampler"] == "DPM++ 2M Karras"
    assert json.loads(got.meta["comfy"])["workflow"] == WORKFLOW


def test_image_without_metadata() -> None:
    got = inspect_image(encode(picture(3), "WEBP"))
    assert got.meta is None and got.format == "WEBP" and got.mime == "image/webp"
    plain = Image.Exif()
    plain.get_ifd(EXIF_IFD)[USER_COMMENT] = b"ASCII\0\0\0holiday snap"  # not a prompt
    assert inspect_image(encode(picture(3), "JPEG", exif=plain)).meta is None


@pytest.mark.parametrize("big_endian", [True, False])
def test_jpeg_user_comment(big_endian: bool) -> None:
    comment = user_comment(REAL_WORLD, big_endian)
    got = inspect_image(encode(picture(4), "JPEG", exif=exif_with_gps(comment)))
    assert got.meta == parse_a1111(REAL_WORLD)
    assert got.mime == "image/jpeg"


# --- served copies -----------------------------------------------------------------------


def assert_no_gps_but_comment(data: bytes) -> None:
    exif = reopen(data).getexif()
    assert GPS_IFD not in exif and not exif.get_ifd(GPS_IFD)
    assert exif[0x010F] == "Civitas Camera"
    assert inspect_image(data).meta == parse_a1111(REAL_WORLD)


@pytest.mark.parametrize("progressive", [False, True])
def test_served_jpeg_loses_gps_and_xmp_keeps_parameters_and_pixels(progressive: bool) -> None:
    exif = exif_with_gps(user_comment(REAL_WORLD))
    original = encode(picture(5), "JPEG", exif=exif, xmp=XMP, progressive=progressive)
    assert GPS_IFD in reopen(original).getexif() and b"GPSLatitude" in original

    copy = served_copy(original)
    assert_no_gps_but_comment(copy)
    assert b"GPSLatitude" not in copy  # the XMP packet is gone too
    assert np.array_equal(np.asarray(reopen(copy)), np.asarray(reopen(original)))
    sos = original.index(b"\xff\xda")
    assert copy.endswith(original[sos:])  # image data untouched, not re-encoded


def test_served_jpeg_drops_trailing_data_and_keeps_clean_files() -> None:
    clean = encode(picture(6), "JPEG")
    assert served_copy(clean) == clean
    assert served_copy(clean + b"appended secret image") == clean


def test_served_webp_loses_gps_and_xmp() -> None:
    exif = exif_with_gps(user_comment(REAL_WORLD))
    original = encode(picture(7), "WEBP", exif=exif, xmp=XMP, quality=90)
    copy = served_copy(original)
    assert_no_gps_but_comment(copy)
    assert b"GPSLatitude" not in copy and b"XMP " not in copy
    assert np.array_equal(np.asarray(reopen(copy)), np.asarray(reopen(original)))


def test_served_png_loses_gps_and_xmp_keeps_text_chunks() -> None:
    info = PngInfo()
    info.add_text("parameters", REAL_WORLD)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    original = encode(picture(8), "PNG", pnginfo=info, exif=exif_with_gps(b"ASCII\0\0\0x"))
    copy = served_copy(original)
    exif = reopen(copy).getexif()
    assert GPS_IFD not in exif and exif[0x010F] == "Civitas Camera"
    assert b"GPSLatitude" not in copy
    assert inspect_image(copy).meta == parse_a1111(REAL_WORLD)
    assert np.array_equal(np.asarray(reopen(copy)), np.asarray(reopen(original)))


# --- previews ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB")])
def test_resized_keeps_aspect_and_format(fmt: str, mode: str) -> None:
    data = encode(picture(9, (600, 400), mode), fmt)
    small = reopen(resized(data, 150))
    assert small.format == fmt and small.size == (150, 100)
    if fmt == "PNG":
        assert small.mode == "RGBA"


def test_resized_never_upscales() -> None:
    data = encode(picture(10, (200, 100)), "PNG")
    assert reopen(resized(data, 200)).size == (200, 100)
    assert reopen(resized(data, 4000)).size == (200, 100)
    with pytest.raises(BadRequest):
        resized(data, 0)


def test_resized_palette_png_and_rotated_jpeg() -> None:
    palette = picture(11, (300, 150)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert reopen(resized(encode(palette, "PNG"), 100)).size == (100, 50)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90: displayed 150 wide, 300 high
    rotated = encode(picture(12, (300, 150)), "JPEG", exif=exif)
    assert reopen(resized(rotated, 75)).size == (75, 150)


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (7000, 7000), (20_000, 10)])
def test_decompression_bombs_are_refused_before_decoding(width: int, height: int) -> None:
    data = png_header(width, height)
    assert len(data) < 200
    for call in (inspect_image, served_copy, lambda d: resized(d, 10)):
        with pytest.raises(ImageTooManyPixels) as caught:
            call(data)
        assert caught.value.status == 413


def test_pillow_bomb_warning_range_is_refused_too() -> None:
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageTooManyPixels):
        inspect_image(png_header(10_000, 10_000))  # 100M: Pillow only warns; we refuse


@pytest.mark.parametrize(("width", "height"), [(6000, 6000), (16384, 2000), (8000, 5000)])
def test_images_within_limits_reach_the_decoder(width: int, height: int) -> None:
    assert width * height <= MAX_PIXELS
    with pytest.raises(CorruptImage):  # refused only because the IDAT is short
        inspect_image(png_header(width, height))


def test_truncated_images_are_refused() -> None:
    for fmt in ("PNG", "JPEG", "WEBP"):
        data = encode(picture(13), fmt)
        with pytest.raises(CorruptImage) as caught:
            inspect_image(data[: len(data) // 2])
        assert caught.value.code == "image_corrupt"


def test_corrupt_png_crc_is_refused() -> None:
    data = bytearray(encode(picture(14), "PNG"))
    data[40] ^= 0xFF
    with pytest.raises(CorruptImage):
        inspect_image(bytes(data))


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO"])
def test_other_formats_are_refused(fmt: str) -> None:
    with pytest.raises(UnsupportedImage) as caught:
        inspect_image(encode(picture(15, (64, 64)), fmt))
    assert caught.value.status == 415 and caught.value.code == "image_unsupported"


@pytest.mark.parametrize("data", [b"", b"hello", b"<svg xmlns='http://www.w3.org/2000/svg'/>"])
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(UnsupportedImage):
        inspect_image(data)


def test_too_many_bytes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(picture(16), "PNG")
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", len(data) - 1)
    with pytest.raises(ImageTooLarge) as caught:
        inspect_image(data)
    assert caught.value.status == 413 and caught.value.code == "image_too_large"


def test_error_codes_are_distinct() -> None:
    classes = [ImageTooLarge, UnsupportedImage, ImageTooManyPixels, CorruptImage]
    assert len({cls.code for cls in classes}) == len(classes)
    assert all(issubclass(cls, ImageError) and issubclass(cls, CivitasError) for cls in classes)


# --- PDQ ---------------------------------------------------------------------------------


def test_pdq_matches_a_resized_reencoded_copy_but_not_another_image() -> None:
    original = inspect_image(encode(picture(17, (512, 384)), "PNG"))
    copy = inspect_image(resized(encode(picture(17, (512, 384)), "JPEG", quality=95), 200))
    other = inspect_image(encode(picture(18, (512, 384)), "PNG"))
    assert original.pdq and copy.pdq and other.pdq
    assert all(i.pdq_quality is not None and i.pdq_quality >= 50 for i in (original, copy, other))
    assert pdq_distance(original.pdq, copy.pdq) <= 31
    assert pdq_distance(original.pdq, other.pdq) > 31
    assert pdq_distance(original.pdq, original.pdq) == 0


def test_pdq_of_16_bit_png_matches_8_bit() -> None:
    grey = picture(19, (256, 192), "L")
    deep = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    assert deep.mode == "I;16"
    a, b = inspect_image(encode(grey, "PNG")), inspect_image(encode(deep, "PNG"))
    assert a.pdq and b.pdq and pdq_distance(a.pdq, b.pdq) <= 8
    assert reopen(resized(encode(deep, "PNG"), 64)).mode == "L"


def test_pdq_distance_counts_bits() -> None:
    assert pdq_distance(b"\0" * 32, b"\xff" * 32) == 256
    assert pdq_distance(b"\x01" + b"\0" * 31, b"\0" * 32) == 1
    with pytest.raises(ValueError):
        pdq_distance(b"\0" * 31, b"\0" * 32)
