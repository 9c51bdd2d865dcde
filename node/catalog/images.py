"""Image ingest: validate untrusted uploads, read their generation metadata, hash them.

Only PNG, JPEG and WebP are accepted, recognised by their magic bytes and opened with that
one Pillow plugin. Every limit that the header can answer (bytes, sides, pixels) is
checked before a pixel is decoded, so a small file cannot make the node allocate
gigabytes. Served copies lose GPS data but keep the generation metadata people share
images for; they are edited at the container level, so pixels are never re-encoded.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blurhash
import numpy as np
import pdqhash
from PIL import Image, ImageOps

from node.catalog import genmeta
from node.catalog.schemas import MAX_IMAGE_BYTES as MAX_IMAGE_BYTES  # the one image limit
from node.errors import BadRequest, CivitasError

MAX_PIXELS = 40_000_000
MAX_SIDE = 16384
PDQ_BYTES = 32
_PDQ_SIDE = 1024  # PDQ downsamples to 64x64 anyway; hashing a 1024px copy is far faster
# What one decoded image may hold in memory (see decode_cost): every PNG or baseline JPEG
# the pixel cap allows fits; a WebP or progressive JPEG past ~17-27 MP does not.
MAX_DECODE_BYTES = 256 * 1024 * 1024
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_WEBP_BYTES_PER_PIXEL = 16
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# What Pillow raises on malformed input (its own fuzzers expect these).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_EXIF_IFD, _GPS_IFD, _USER_COMMENT, _MAKER_NOTE = 0x8769, 0x8825, 0x9286, 0x927C
# PNG text chunks that carry XMP/EXIF/IPTC (and so possibly a location) rather than prompts.
_PNG_PROFILE_KEYS = (b"XML:com.adobe.xmp", b"Raw profile type")


class ImageError(CivitasError):
    """The image was refused. Subclasses say why."""

    code = "image_invalid"


class ImageTooLarge(ImageError):
    code = "image_too_large"
    status = 413


class UnsupportedImage(ImageError):
    code = "image_unsupported"
    status = 415


class ImageTooManyPixels(ImageError):
    """Too many pixels for its size: a decompression bomb, or just too big to decode."""

    code = "image_too_many_pixels"
    status = 413


class CorruptImage(ImageError):
    code = "image_corrupt"


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str  # "PNG" | "JPEG" | "WEBP"
    mime: str
    meta: dict[str, Any] | None  # Civitai ``meta`` fields; None when the image has none
    pdq: bytes | None  # 256-bit PDQ hash, big-endian: .hex() is ThreatExchange's hex form
    pdq_quality: int | None  # 0-100; hashes under 50 match poorly
    sha256: str  # uppercase hex of the bytes as uploaded
    size: int


# --- opening -----------------------------------------------------------------------------


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    raise UnsupportedImage("not a PNG, JPEG or WebP image; only those formats are accepted")


def _open(data: bytes) -> tuple[Image.Image, str]:
    """Open lazily (header only) and enforce every limit the header can answer."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLarge(f"images may be at most {MAX_IMAGE_BYTES // 2**20} MiB")
    fmt = _sniff(data)
    try:  # Pillow's own bomb check: an error over 2 x 89M pixels, a warning over 89M
        image = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise ImageTooManyPixels(f"image declares too many pixels: {exc}") from exc
    except _PIL_ERRORS as exc:
        raise CorruptImage(f"unreadable {fmt} image: {exc}") from exc
    width, height = image.size  # ours is stricter, so Pillow's warning case lands here too
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
        image.close()
        raise ImageTooManyPixels(
            f"image is {width}x{height}; at most {MAX_SIDE} px a side and "
            f"{MAX_PIXELS:,} pixels are accepted"
        )
    progressive = bool(image.info.get("progressive") or image.info.get("progression"))
    cost = decode_cost(fmt, image.mode, width, height, progressive=progressive)
    if cost > MAX_DECODE_BYTES:
        image.close()
        raise ImageTooManyPixels(
            f"decoding this {width}x{height} {image.mode} {fmt} would take "
            f"{cost / 2**20:,.0f} MiB; at most {MAX_DECODE_BYTES // 2**20} MiB per image"
        )
    return image, fmt


def decode_cost(fmt: str, mode: str, width: int, height: int, *, progressive: bool = False) -> int:
    """Bytes a full decode of the image holds at once: Pillow's own storage for the mode
    (1, 2 or 4 bytes a pixel), plus a progressive JPEG's coefficients (libjpeg keeps
    6 bytes a pixel of them); Pillow's WebP decoder takes ~16 (all measured)."""
    if fmt == "WEBP":
        per_pixel = _WEBP_BYTES_PER_PIXEL
    else:
        per_pixel = _MODE_BYTES.get(mode, 4) + (6 if fmt == "JPEG" and progressive else 0)
    return width * height * per_pixel


def _decode(data: bytes) -> tuple[Image.Image, str]:
    """Open, verify the structure (CRCs, chunk order), then really decode the first frame."""
    image, fmt = _open(data)
    try:
        with image:
            image.verify()
        image, fmt = _open(data)
        image.load()
    except _PIL_ERRORS as exc:
        raise CorruptImage(f"corrupt or truncated {fmt} image: {exc}") from exc
    return image, fmt


# --- metadata ----------------------------------------------------------------------------


def _user_comment_text(raw: Any) -> str | None:
    """Decode EXIF UserComment: an 8-byte charset prefix, then the text.

    A1111 (through piexif) writes ``UNICODE`` + UTF-16 big-endian; other writers follow
    the TIFF byte order, so the byte order is guessed from where ASCII's zero bytes fall.
    """
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes) or len(raw) < 8:
        return None
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\0":
        if body[:2] in (b"\xfe\xff", b"\xff\xfe"):
            return body.decode("utf-16", "replace")
        sample = body[:256]
        big = sample[0::2].count(0) >= sample[1::2].count(0)
        return body.decode("utf-16-be" if big else "utf-16-le", "replace").rstrip("\0")
    return body.decode("utf-8", "replace").rstrip("\0")


def _read_meta(image: Image.Image, fmt: str) -> dict[str, Any] | None:
    """PNG text chunks, or EXIF UserComment (JPEG/WebP), parsed into Civitai ``meta``."""
    texts: dict[str, str] = {}
    try:
        if fmt == "PNG":
            texts = {k: str(v) for k, v in getattr(image, "text", {}).items()}
        else:
            comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
            text = _user_comment_text(comment)
            if text is None and isinstance(image.info.get("comment"), bytes):
                text = image.info["comment"].decode("utf-8", "replace")
            if text and "Steps: " in text:  # only A1111-shaped comments are prompts
                texts["parameters"] = text
    except _PIL_ERRORS:
        return None
    meta: dict[str, Any] = {}
    if texts.get("prompt") or texts.get("workflow"):
        meta.update(genmeta.parse_comfy(texts.get("prompt"), texts.get("workflow")))
    if texts.get("parameters"):
        try:
            meta.update(genmeta.parse_a1111(texts["parameters"]))
        except genmeta.MetadataError:
            pass
    return meta or None


def _eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale scaled to 8 bits (Pillow's convert would clip them).

    Meant for a reduced copy (:func:`_reduced`): it makes two small copies of the pixels."""
    if not image.mode.startswith(("I", "F")):
        return image
    samples = np.asarray(image)
    if image.mode == "F":
        scaled = np.clip(samples, 0, 255)
    else:  # I;16 or I: 0..65535 onto 0..255, as the float division by 257 did
        scaled = np.clip(samples // 257, 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), "L")


_ORIENTATION = 0x0112
_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _reduced(image: Image.Image, side: int) -> Image.Image:
    """The image as displayed (EXIF orientation applied), at most ``side`` px a side, in
    its own mode (16-bit included): reduced before it is turned or converted, so that no
    full-size copy of a large image is ever made."""
    try:
        turn = _TURNS.get(image.getexif().get(_ORIENTATION, 1))
    except _PIL_ERRORS:
        turn = None
    small = image
    if max(image.size) > side:
        scale = side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.Resampling.BOX)
    return small.transpose(turn) if turn is not None else small


def _pdq(image: Image.Image) -> tuple[bytes, int]:
    """PDQ (Meta's perceptual hash, used for hash-sharing in moderation) of the image as
    displayed. Kept behind this one function so the implementation can be swapped."""
    rgb = _eight_bit(_reduced(image, _PDQ_SIDE)).convert("RGB")
    bits, quality = pdqhash.compute(np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)))
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes(), int(quality)


def pdq_distance(a: bytes, b: bytes) -> int:
    """Hamming distance of two PDQ hashes; 31 or less is the usual "same image" threshold."""
    if len(a) != PDQ_BYTES or len(b) != PDQ_BYTES:
        raise ValueError(f"PDQ hashes are {PDQ_BYTES} bytes")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def inspect_image(data: bytes) -> ImageInfo:
    """Validate an uploaded image and describe it; raises an :class:`ImageError` if refused."""
    image, fmt = _decode(data)
    with image:
        meta = _read_meta(image, fmt)
        pdq, quality = _pdq(image)
        return ImageInfo(
            width=image.width,
            height=image.height,
            format=fmt,
            mime=_MIME[fmt],
            meta=meta,
            pdq=pdq,
            pdq_quality=quality,
            sha256=hashlib.sha256(data).hexdigest().upper(),
            size=len(data),
        )


# --- blurhash ------------------------------------------------------------------------------

BLURHASH_SIDE = 32  # pixels the image is reduced to first: a blurhash keeps only 4x4 waves
BLURHASH_COMPONENTS = (4, 4)  # as Civitai's: 36 characters


def blurhash_of(path: Path) -> str:
    """The blurhash (https://blurha.sh) of the image file at ``path``, as displayed
    (EXIF orientation applied); JPEGs are decoded at a reduced scale. Raises an
    :class:`ImageError` when the file is not an image this node accepts."""
    data = path.read_bytes()
    image, _ = _open(data)
    try:
        with image:
            image.draft("RGB", (BLURHASH_SIDE * 2, BLURHASH_SIDE * 2))
            rgb = _eight_bit(_reduced(image, 4 * BLURHASH_SIDE)).convert("RGB")
            rgb.thumbnail((BLURHASH_SIDE, BLURHASH_SIDE), Image.Resampling.BOX)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except _PIL_ERRORS as exc:
        raise CorruptImage(f"unreadable image: {exc}") from exc
    return str(blurhash.encode(pixels, *BLURHASH_COMPONENTS))


# --- served copies -----------------------------------------------------------------------


def _ifd0_tags(body: bytes) -> set[int]:
    """Tags of a TIFF body's first IFD, read directly: Pillow skips entries it cannot
    read, and a GPS pointer it skipped would otherwise survive in the bytes."""
    order = {b"II": "<", b"MM": ">"}.get(body[:2])
    if order is None:
        raise ValueError("not a TIFF header")
    offset = struct.unpack_from(order + "I", body, 4)[0]
    count = struct.unpack_from(order + "H", body, offset)[0]
    return {struct.unpack_from(order + "H", body, offset + 2 + 12 * i)[0] for i in range(count)}


def _exif_without_gps(payload: bytes) -> bytes | None:
    """The TIFF body of an EXIF block with the GPS IFD (and MakerNote) gone.

    Unchanged bytes when there is no GPS; ``None`` (drop the block) when it cannot be
    read, since an unreadable block could still hold a location.
    """
    body = payload[6:] if payload.startswith(b"Exif\0\0") else payload
    exif = Image.Exif()
    try:
        if _GPS_IFD not in _ifd0_tags(body):
            return body
        exif.load(body)
        exif.pop(_GPS_IFD, None)  # before any get_ifd(GPS): tobytes() writes those back
        exif.get_ifd(_EXIF_IFD).pop(_MAKER_NOTE, None)  # vendor blobs may hold GPS too
        return exif.tobytes()[6:]
    except _PIL_ERRORS:
        return None


def _jpeg_end(data: bytes, pos: int) -> int:
    """Offset just past EOI, walking scans (entropy-coded data) and the segments between."""
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xD9:
            return pos + 2
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        while marker == 0xDA:  # scan data ends at the first 0xFF that is not 0x00/RST/fill
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= len(data):
                return len(data)
            following = data[pos + 1]
            if following == 0xFF:
                pos += 1
            elif following == 0 or 0xD0 <= following <= 0xD7:
                pos += 2
            else:
                break
    return len(data)


def _scrub_jpeg(data: bytes) -> bytes:
    out, pos = [data[:2]], 2
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise CorruptImage("JPEG has no image data (no start-of-scan marker)")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is image data up to EOI
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data) or end < pos + 4:
            raise CorruptImage("JPEG segment runs past the end of the file")
        segment = data[pos + 4 : end]
        if marker == 0xE1 and segment.startswith(b"Exif\0\0"):
            body = _exif_without_gps(segment)
            if body is not None and len(body) + 8 <= 0xFFFF:
                out.append(b"\xff\xe1" + (len(body) + 8).to_bytes(2, "big") + b"Exif\0\0" + body)
        elif not (
            (marker == 0xE1 and segment.startswith(b"http://ns.adobe.com/"))  # XMP
            or marker == 0xED  # Photoshop/IPTC: may name a place
            or (marker == 0xE2 and segment.startswith(b"MPF\0"))  # index of appended images
        ):
            out.append(data[pos:end])
        pos = end
    out.append(data[pos : _jpeg_end(data, pos)])  # drops appended images and trailers
    return b"".join(out)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body).to_bytes(4, "big")
    return len(body).to_bytes(4, "big") + kind + body + crc


def _scrub_png(data: bytes) -> bytes:
    out, pos = [data[:8]], 8
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, end = data[pos + 4 : pos + 8], pos + 12 + length
        if end > len(data):
            raise CorruptImage("PNG chunk runs past the end of the file")
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"eXIf":
            new = _exif_without_gps(body)
            if new is not None:
                out.append(data[pos:end] if new == body else _png_chunk(kind, new))
        elif not (kind in (b"tEXt", b"zTXt", b"iTXt") and body.startswith(_PNG_PROFILE_KEYS)):
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(out)


def _scrub_webp(data: bytes) -> bytes:
    chunks: list[bytes] = []
    pos, exif_kept = 12, False
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        end = pos + 8 + size + (size & 1)
        if pos + 8 + size > len(data):
            raise CorruptImage("WebP chunk runs past the end of the file")
        if kind == b"EXIF":
            body = _exif_without_gps(data[pos + 8 : pos + 8 + size])
            if body is not None:
                pad = b"\0" if len(body) & 1 else b""
                chunks.append(kind + len(body).to_bytes(4, "little") + body + pad)
                exif_kept = True
        elif kind != b"XMP ":
            chunks.append(data[pos:end])
        pos = end
    if chunks and chunks[0][:4] == b"VP8X":  # flags: 0x08 EXIF present, 0x04 XMP present
        flags = (chunks[0][8] & ~0x0C) | (0x08 if exif_kept else 0)
        chunks[0] = chunks[0][:8] + bytes([flags]) + chunks[0][9:]
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def served_copy(data: bytes) -> bytes:
    """The image as we serve it: GPS and XMP/IPTC removed, generation metadata and pixels
    kept byte for byte, same format."""
    image, fmt = _open(data)
    image.close()
    scrub = {"JPEG": _scrub_jpeg, "PNG": _scrub_png, "WEBP": _scrub_webp}[fmt]
    return scrub(data)


# The widths previews are made at: a request is rounded up to the next one (past the last,
# or past the image's own width, the original is served), so one image has at most this
# many cached previews. 450 is what Civitai's own pages ask for; its API names the
# original width, which is served as is.
PREVIEW_WIDTHS = (160, 320, 450, 640, 960, 1280)


# What decoding one image for a preview may cost. JPEG decodes at a reduced DCT scale;
# PNG costs ~4 bytes a pixel; Pillow's WebP decoder ~16 (measured: 36 MP took 550 MB).
# An image over the cap is served as its original rather than decoded.
MAX_PREVIEW_DECODE_BYTES = 256 * 1024 * 1024
_DECODE_BYTES_PER_PIXEL = {"image/jpeg": 0, "image/png": 4, "image/webp": 16}


def preview_width(requested: int, width: int, height: int, mime: str) -> int | None:
    """The width served for ``width=requested``, or None for the original image."""
    cost = width * height * _DECODE_BYTES_PER_PIXEL.get(mime, 16)
    if cost > MAX_PREVIEW_DECODE_BYTES:
        return None
    for allowed in PREVIEW_WIDTHS:
        if allowed >= requested:
            return allowed if allowed < width else None
    return None


def resized(data: bytes, width: int) -> bytes:
    """A preview at most ``width`` px wide, same format, aspect kept, never upscaled.

    Decoded as small as the format allows: JPEG at a DCT scale (``draft``) just above the
    target, others reduced by an integer factor right after decoding, so a 36 MP JPEG
    costs a few MB, not three full copies. Pixels are capped by the ingest limits
    (``MAX_PIXELS``), checked from the header before anything is decoded. Previews carry
    no metadata; an image already narrow enough is its served copy.
    """
    if width < 1:
        raise BadRequest("preview width must be a positive number of pixels")
    image, fmt = _open(data)
    with image:
        turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF: shown 90° turned
        shown_width, shown_height = image.size[::-1] if turned else image.size
        cost = image.width * image.height * _DECODE_BYTES_PER_PIXEL[_MIME[fmt]]
        if width >= shown_width or cost > MAX_PREVIEW_DECODE_BYTES:  # (a record may lie)
            return served_copy(data)
        height = max(1, round(shown_height * width / shown_width))
        box = (height, width) if turned else (width, height)
        try:
            if image.mode.startswith(("I", "F")):  # 16-bit: no draft or reduce, resized as is
                image = image.resize(box, Image.Resampling.BOX)
            else:
                image.thumbnail(box, Image.Resampling.LANCZOS, reducing_gap=3.0)  # draft+reduce
            shown = ImageOps.exif_transpose(image) or image
        except _PIL_ERRORS as exc:
            raise CorruptImage(f"corrupt or truncated {fmt} image: {exc}") from exc
        shown = _eight_bit(shown)
        alpha = "A" in shown.mode or "transparency" in shown.info
        if fmt == "JPEG" and shown.mode not in ("L", "RGB"):
            shown = shown.convert("RGB")
        elif shown.mode not in ("L", "LA", "RGB", "RGBA"):
            shown = shown.convert("RGBA" if alpha else "RGB")
        if shown.size != (width, height):  # thumbnail keeps the aspect by its own rounding
            shown = shown.resize((width, height), Image.Resampling.LANCZOS)
        options: dict[str, Any] = {"icc_profile": image.info.get("icc_profile")}
        if fmt in ("JPEG", "WEBP"):
            options["quality"] = 85
        buffer = io.BytesIO()
        shown.save(buffer, format=fmt, **options)
        return buffer.getvalue()
