"""Publishing models: records, store, idempotency, versions, edits, refusals."""

from __future__ import annotations

import hashlib
import random
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest
import sqlalchemy as sa

from node.accounts.service import User
from node.app import Node
from node.catalog.ids import candidate
from node.catalog.safetensors import PickleRefused, SafetensorsError
from node.catalog.search import SearchQuery
from node.catalog.tables import images, model_tags, model_versions, models, version_files
from node.errors import Forbidden
from node.p2p.tables import blobs, records
from tests.catalog.conftest import PASSWORD, png_bytes

FIELDS = {"name": "Fox style", "tags": ["Watercolor", "animals"], "trained_words": ["foxstyle"]}


async def publish(node: Node, user: User, path: Path, **data: Any) -> dict[str, Any]:
    return await node.catalog.publish_path(user.did, path, {**FIELDS, **data})


async def count(node: Node, table: sa.Table) -> int:
    async with node.db.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


async def test_publish_signs_records_stores_the_file_and_projects_the_catalog(
    node: Node, alice: User, make_lora: Callable[..., Path]
) -> None:
    path = make_lora()
    data = path.read_bytes()
    result = await publish(node, alice, path, images=None)
    assert result["created"] and result["warnings"] == []
    sha = hashlib.sha256(data).hexdigest().upper()
    assert result["sha256"] == sha

    model = result["model"]
    assert model["name"] == "Fox style" and model["type"] == "LORA"  # detected
    assert model["creator"]["username"] == "alice"
    assert model["tags"] == ["animals", "watercolor"]
    version = model["modelVersions"][0]
    assert version["baseModel"] == "SD 1.5"  # detected from ss_base_model_version
    assert version["trainedWords"] == ["foxstyle"]
    (file,) = version["files"]
    assert file["hashes"]["SHA256"] == sha
    assert file["hashes"]["AutoV2"] == sha[:10]
    assert file["hashes"]["CRC32"] == f"{zlib.crc32(data):08X}"
    assert file["hashes"]["BLAKE3"] == blake3.blake3(data).hexdigest().upper()
    header_len = int.from_bytes(data[:8], "little")
    assert (
        file["hashes"]["AutoV3"] == hashlib.sha256(data[8 + header_len :]).hexdigest().upper()[:12]
    )
    assert "AutoV1" not in file["hashes"]  # a file under 2 MiB has none
    assert file["metadata"] == {"format": "SafeTensor", "size": None, "fp": "fp16"}
    assert file["civitas"]["headerMetadata"]["ss_network_module"] == "networks.lora"

    # The records are signed by alice's key; integer ids come from the root record id.
    root = bytes.fromhex(model["civitas"]["rootId"])
    assert model["id"] == candidate(root)
    entry = await node.log.get(root)
    assert entry is not None and entry.author == alice.did and entry.type == "model"
    # The file is in the content-addressed store, byte for byte.
    stored = await node.store.local_path(sha)
    assert stored is not None and stored.read_bytes() == data
    assert stored.parent.parent.parent == node.store.root


async def test_publishing_the_same_file_twice_is_idempotent(
    node: Node, alice: User, make_lora: Callable[..., Path]
) -> None:
    path = make_lora()
    first = await publish(node, alice, path)
    before = await node.log.count()
    again = await publish(node, alice, path, name="Another name")
    assert not again["created"]
    assert again["model"]["id"] == first["model"]["id"]
    assert await node.log.count() == before
    assert await count(node, models) == 1


async def test_new_version_and_edit_keep_the_model_identity(
    node: Node, alice: User, make_lora: Callable[..., Path]
) -> None:
    first = await publish(node, alice, make_lora("v1.safetensors", 1))
    model_id = first["model"]["id"]
    second = await node.catalog.publish_path(
        alice.did, make_lora("v2.safetensors", 2), {"model_id": model_id, "version": "v2"}
    )
    assert second["created"]
    assert [v["name"] for v in second["model"]["modelVersions"]] == ["v2", "v1"]

    edited = await node.catalog.edit_model(
        alice.did, model_id, {"description": "Now with **more** foxes", "tags": ["fox"]}
    )
    assert edited["id"] == model_id
    assert edited["description"] == "Now with **more** foxes"
    assert edited["tags"] == ["fox"]
    assert edited["name"] == "Fox style"  # unchanged fields carry over
    assert len(edited["modelVersions"]) == 2
    assert edited["civitas"]["revisionId"] != edited["civitas"]["rootId"]


async def test_only_the_author_adds_versions_or_edits(
    node: Node, alice: User, make_lora: Callable[..., Path]
) -> None:
    model_id = (await publish(node, alice, make_lora()))["model"]["id"]
    bob = await node.accounts.add_user("bob", PASSWORD)
    with pytest.raises(Forbidden):
        await node.catalog.publish_path(
            bob.did, make_lora("b.safetensors", 5), {"model_id": model_id}
        )
    with pytest.raises(Forbidden):
        await node.catalog.edit_model(bob.did, model_id, {"name": "mine now"})


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:5],  # shorter than the length prefix
        lambda data: (10**9).to_bytes(8, "little") + data[8:],  # header past the end
        lambda data: data[:-3],  # tensors run past the end
        lambda data: data + b"\0" * 16,  # trailing bytes
        lambda data: data[:8] + b"[" + data[9:],  # header is not a JSON object
    ],
)
async def test_a_bad_file_leaves_no_rows_and_no_stored_file(
    node: Node, alice: User, make_lora: Callable[..., Path], damage: Callable[[bytes], bytes]
) -> None:
    path = make_lora()
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SafetensorsError):
        await publish(node, alice, path)
    assert await count(node, version_files) == 0
    assert await count(node, blobs) == 0
    assert await count(node, records) == 1  # alice's profile only
    assert not node.store.tmp.exists() or list(node.store.tmp.iterdir()) == []


async def test_pickle_checkpoints_are_refused(node: Node, alice: User, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    with pytest.raises(PickleRefused, match="safetensors"):
        await publish(node, alice, ckpt)
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a torch zip checkpoint
    with pytest.raises(PickleRefused):
        await publish(node, alice, disguised)
    assert await count(node, blobs) == 0


async def test_preview_images_become_image_records_with_generation_metadata(
    node: Node, alice: User, make_lora: Callable[..., Path], tmp_path: Path
) -> None:
    preview = tmp_path / "preview.png"
    preview.write_bytes(png_bytes())
    result = await node.catalog.publish_path(alice.did, make_lora(), FIELDS, previews=[preview])
    (image,) = result["model"]["modelVersions"][0]["images"]
    assert (image["width"], image["height"]) == (96, 64)
    assert image["meta"]["prompt"].startswith("a watercolor fox")
    assert image["meta"]["seed"] == 1234
    assert image["meta"]["cfgScale"] == 7.5
    assert "/width=96/" in image["url"]
    sha = image["civitas"]["sha256"]
    stored = await node.store.local_path(sha)
    assert stored is not None and stored.read_bytes() == preview.read_bytes()


async def snapshot(node: Node) -> list[list[tuple[Any, ...]]]:
    out = []
    async with node.db.read() as conn:
        for table, key in (
            (models, [models.c.root_id]),
            (model_tags, [model_tags.c.root_id, model_tags.c.tag]),
            (model_versions, [model_versions.c.id]),
            (version_files, [version_files.c.version_id, version_files.c.sha256]),
            (images, [images.c.id]),
        ):
            cols = [c for c in table.c if c.name != "seq"]
            rows = await conn.execute(sa.select(*cols).order_by(*key))
            out.append([tuple(r) for r in rows])
    return out


async def test_catalog_is_the_same_whatever_order_records_arrive_in(
    node: Node, alice: User, make_lora: Callable[..., Path], tmp_path: Path
) -> None:
    preview = tmp_path / "p.png"
    preview.write_bytes(png_bytes(3))
    first = await node.catalog.publish_path(
        alice.did, make_lora("a.safetensors", 1), FIELDS, previews=[preview]
    )
    model_id = first["model"]["id"]
    await node.catalog.publish_path(
        alice.did, make_lora("b.safetensors", 2), {"model_id": model_id, "version": "v2"}
    )
    await node.catalog.edit_model(alice.did, model_id, {"name": "Renamed"})
    other = await publish(node, alice, make_lora("c.safetensors", 3), name="Other model")
    await node.catalog.withdraw_model(alice.did, other["model"]["id"], "a mistake")
    expected = await snapshot(node)
    assert [row[4] for row in expected[0]] == ["Renamed"]  # the withdrawn model is gone

    async with node.db.read() as conn:
        raws = (
            (await conn.execute(sa.select(records.c.raw).order_by(records.c.seq))).scalars().all()
        )
    for seed in range(3):
        shuffled = list(raws)
        random.Random(seed).shuffle(shuffled)
        async with node.db.write() as conn:
            await conn.execute(records.delete())
        await node.log.reindex()  # empties every projected table
        for raw in shuffled:
            await node.log.accept(raw)
        assert await snapshot(node) == expected

    assert await node.log.reindex() == len(raws)
    assert await snapshot(node) == expected


async def test_previews_are_stored_without_location_data(
    node: Node, alice: User, make_lora: Callable[..., Path], tmp_path: Path
) -> None:
    from tests.catalog.test_images import (
        GPS_IFD,
        encode,
        exif_with_gps,
        picture,
        reopen,
        user_comment,
    )

    photo = encode(picture(1), "JPEG", exif=exif_with_gps(user_comment("Steps: 20, Seed: 7")))
    assert GPS_IFD in reopen(photo).getexif()
    preview = tmp_path / "photo.jpg"
    preview.write_bytes(photo)
    result = await node.catalog.publish_path(alice.did, make_lora(), FIELDS, previews=[preview])
    (image,) = result["model"]["modelVersions"][0]["images"]
    stored = await node.store.local_path(image["civitas"]["sha256"])
    assert stored is not None
    kept = stored.read_bytes()
    assert image["civitas"]["sha256"] == hashlib.sha256(kept).hexdigest().upper()
    assert not reopen(kept).getexif().get_ifd(GPS_IFD)
    assert image["meta"]["seed"] == 7  # generation metadata survives


async def test_withdrawing_a_model_hides_it_everywhere_and_only_its_author_may(
    node: Node, alice: User, make_lora: Callable[..., Path]
) -> None:
    result = await publish(node, alice, make_lora())
    model_id = result["model"]["id"]
    sha = result["sha256"]
    bob = await node.accounts.add_user("bob", PASSWORD)
    with pytest.raises(Forbidden):
        await node.catalog.withdraw_model(bob.did, model_id, None)
    await node.catalog.withdraw_model(alice.did, model_id, "replaced by v2")
    assert await node.catalog.views.root_for_int(model_id) is None
    assert await node.catalog.views.version_by_hash(sha) is None
    roots, _ = await node.catalog.search_index.search(SearchQuery(text="fox"))
    assert roots == []
    # Final: re-publishing the same content as a new model works, the old root stays gone.
    again = await publish(node, alice, make_lora(), name="Fox style again")
    assert again["created"] and again["model"]["id"] != model_id
    assert await node.log.reindex() > 0
    assert await node.catalog.views.root_for_int(model_id) is None
