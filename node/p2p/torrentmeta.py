"""BitTorrent metadata as pure functions: piece size, v1 info dicts, .torrent files, magnets.

Torrents are **v1 only**: hybrid and v2 torrents break aria2 and transmission (measured
here: aria2 1.36 computes a wrong info-hash for hybrid torrents and rejects v2). The info
dict depends only on the file's name, size, piece length and piece hashes, so every node
that publishes the same file under the same name derives the same infohash. Trackers and
web seeds live outside the info dict: each node serves a ``.torrent`` naming its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import libtorrent as lt

MIN_PIECE = 16 * 1024
MAX_PIECE = 16 * 1024 * 1024
TARGET_PIECES = 2048  # about 512 KiB pieces for a 1 GiB file, which measured best here


def piece_length_for(size: int) -> int:
    """A power of two from 16 KiB to 16 MiB giving about 2048 pieces."""
    length = MIN_PIECE
    while length < MAX_PIECE and length * TARGET_PIECES < size:
        length *= 2
    return length


@dataclass(frozen=True)
class TorrentMeta:
    infohash: str  # 40 lowercase hex: SHA-1 of the bencoded info dict
    name: str
    size: int
    piece_length: int
    info: bytes  # the bencoded info dict


def make_torrent(name: str, size: int, piece_length: int, pieces: Sequence[bytes]) -> TorrentMeta:
    """The v1 info dict of a single-file torrent whose piece hashes are already known."""
    expected = max(1, -(-size // piece_length))
    if len(pieces) != expected:
        raise ValueError(f"{len(pieces)} piece hashes for {expected} pieces")
    info: Any = {
        b"length": size,
        b"name": name.encode("utf-8"),
        b"piece length": piece_length,
        b"pieces": b"".join(pieces),
    }
    encoded = lt.bencode(info)
    return TorrentMeta(hashlib.sha1(encoded).hexdigest(), name, size, piece_length, encoded)  # noqa: S324 (BitTorrent v1 is SHA-1)


def meta_from_info(info: bytes) -> TorrentMeta:
    """Check a bencoded info dict from elsewhere and read what we need of it."""
    decoded: Any = lt.bdecode(info)
    if not isinstance(decoded, dict) or lt.bencode(decoded) != info:
        raise ValueError("not a canonical bencoded info dict")
    try:
        name = decoded[b"name"].decode("utf-8")
        size = int(decoded[b"length"])
        piece_length = int(decoded[b"piece length"])
        pieces = decoded[b"pieces"]
    except (KeyError, UnicodeDecodeError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a single-file v1 info dict: {exc}") from None
    if len(pieces) != 20 * max(1, -(-size // piece_length)):
        raise ValueError("piece hashes do not match the file size")
    return TorrentMeta(hashlib.sha1(info).hexdigest(), name, size, piece_length, info)  # noqa: S324


def torrent_file(meta: TorrentMeta, trackers: Sequence[str], web_seeds: Sequence[str]) -> bytes:
    """A complete .torrent: the info dict plus this node's tracker and web seed."""
    torrent: Any = {b"info": lt.bdecode(meta.info), b"created by": b"civitas"}
    if trackers:
        torrent[b"announce"] = trackers[0].encode()
        torrent[b"announce-list"] = [[t.encode()] for t in trackers]
    if web_seeds:
        torrent[b"url-list"] = [w.encode() for w in web_seeds]
    return bytes(lt.bencode(torrent))


def magnet(
    infohash: str,
    name: str,
    size: int,
    trackers: Sequence[str] = (),
    web_seeds: Sequence[str] = (),
    peers: Sequence[str] = (),
) -> str:
    """``magnet:?xt=urn:btih:…&dn=…&xl=…&tr=…&ws=…&x.pe=…`` (BEP 9, BEP 19)."""
    params: list[tuple[str, str]] = [("dn", name), ("xl", str(size))]
    params += [("tr", t) for t in trackers] + [("ws", w) for w in web_seeds]
    params += [("x.pe", p) for p in peers]
    return f"magnet:?xt=urn:btih:{infohash}&" + urlencode(params, quote_via=quote)
