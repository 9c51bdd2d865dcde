"""Catalog search latency on a large synthetic catalog, on SQLite and PostgreSQL.

Usage: .venv/bin/python bench/search.py [--models 100000] [--backend sqlite|postgresql|both]
       [--queries 200] [--pg-url URL] [--build direct|records] [--keep] [--explain [KINDS]]
       [--kind-budget 15] [--timeout 10]

For each backend: creates a fresh database (a SQLite file in a temp dir, or a new
PostgreSQL database named civitas_bench_*), runs the migrations, fills the catalog with
N synthetic models, runs ANALYZE, then times the searches GET /api/v1/models makes:

  (a) newest, no filter            (b) text: 1-2 common words    (c) text + type filter
  (d) base model, most downloaded  (e) tag filter                (f) cursor: pages 2-6, newest

Each is timed through ``ModelSearch.search`` alone and with the serialization that
follows it (``CatalogViews.models_by_root``, which is what the endpoint returns). A kind
stops after --queries requests or --kind-budget seconds, whichever comes first, or at the
first request past --timeout; a kind with p99 over 200 ms or a timeout gets its query plan
printed (EXPLAIN QUERY PLAN on SQLite, EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL).

Two ways to build the catalog (the output says which ran, and its rate):
  records  signed ``profile``/``model``/``model_version`` records through
           ``RecordLog.accept_verified``: the real path, projection included. It also
           checks that the projected ``search_text`` equals :func:`search_text_of`.
  direct   (default) the same synthetic models inserted straight into the projected
           tables with Core bulk inserts, rows computed as the projection computes them.
           About 25x faster (2k vs 70 models/s here): the way to reach 100k in minutes.
``model_stats`` (local download counts, never projected) is filled directly on both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.app import build_record_types
from node.catalog.ids import candidate, file_int_id
from node.catalog.search import ModelSearch, SearchQuery
from node.catalog.tables import (
    model_revisions,
    model_stats,
    model_tags,
    model_versions,
    models,
    version_files,
)
from node.catalog.views import CatalogViews
from node.db import Database, sqlite_url
from node.p2p.keys import SigningKey
from node.p2p.log import RecordLog
from node.p2p.records import Record, sign_record
from node.p2p.tables import authors

T = TypeVar("T")

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DAY_MS = 86_400_000
NOW_MS = 1_767_225_600_000  # 2026-01-01, fixed so runs are comparable
BATCH = 2_000  # models per transaction
RECORD_BATCH = 300  # records per accept_verified call
SLOW_MS = 200  # a kind whose p99 is above this gets its query plan printed

# --- vocabulary ---------------------------------------------------------------------------

TAG_WORDS = """
anime character style woman girl realistic photorealistic concept clothing landscape
fantasy portrait man base model cartoon celebrity sexy nsfw cute armor outfit game
scifi cyberpunk architecture illustration 3d art manga comic painting watercolor
oil ink sketch lineart chibi pixel retro vintage photography cinematic dark horror
gothic steampunk medieval knight warrior mage witch elf dragon monster robot mecha
car vehicle building city street interior furniture food animal cat dog fox wolf
bird horse fish flower tree forest mountain ocean beach sky night sunset rain snow
winter summer spring autumn halloween christmas wedding dress kimono uniform school
swimsuit bikini lingerie jacket hoodie hat glasses hair hairstyle eyes face body pose
hands feet tattoo makeup jewelry weapon sword gun magic fire water ice lightning
smoke glow neon light shadow detail texture background wallpaper logo icon poster
concept_art tool utility slider enhancer lighting color contrast sharp soft blur
film analog polaroid lomography bokeh macro closeup fullbody cowboy_shot from_above
from_below side_view back_view dynamic action fighting dancing sitting standing
lying running flying swimming sleeping smiling crying angry blush surprised
video_game genshin_impact honkai pokemon naruto one_piece league_of_legends overwatch
final_fantasy zelda star_wars marvel dc disney pixar ghibli vtuber hololive idol
kpop actress actor singer politician historical mythology greek norse egyptian
japanese chinese korean indian african european american futuristic postapocalyptic
dystopian utopian surreal abstract minimalism maximalism baroque renaissance
impressionism expressionism cubism popart artnouveau artdeco ukiyoe sumie pastel
vibrant monochrome sepia blackandwhite grayscale highcontrast lowkey highkey hdr
depth perspective isometric topdown sidescroller sprite tileset texture_pack normal
upscaler denoise restoration inpainting outpainting controlnet openpose canny depth_map
segmentation lora locon lycoris dora embedding hypernetwork vae checkpoint merge
finetune dreambooth trained mix blend remix detailer booru danbooru e621 furry
anthro kemonomimi catgirl foxgirl demon angel succubus vampire zombie ghost skeleton
alien spaceship planet galaxy space astronaut underwater mermaid fairy goblin orc
""".split()

NAME_ADJECTIVES = """
Anime Realistic Detailed Ultimate Dreamy Cinematic Epic Cute Dark Soft Vivid Retro
Perfect Better Super Hyper Neo Classic Modern Magic Mystic Cosmic Golden Silver
Crystal Shadow Pastel Neon Lucid Hazy Sharp Pure Wild Tiny Giant Royal Ancient
""".split()

NAME_SUFFIX = {
    "LORA": ["LoRA", "LoRA", "Style LoRA", "Concept", "Helper", "Slider"],
    "Checkpoint": ["Mix", "XL", "Merge", "Diffusion", "Vision", "Realism"],
    "TextualInversion": ["Embedding", "Negative", "TI"],
    "LoCon": ["LoCon", "LyCORIS"],
    "DoRA": ["DoRA"],
    "VAE": ["VAE"],
    "Controlnet": ["ControlNet"],
    "Upscaler": ["Upscaler", "ESRGAN"],
}

FILLER = """
this model was trained on a dataset of images and works best with the trigger word use
it at weight for strength recommended settings sampler steps cfg clip skip hires fix
please leave a review if you like it thanks to everyone who supported me new version
improves quality fixes hands better faces more stable compatible with most checkpoints
""".split()

MODEL_TYPE_WEIGHTS = {
    "LORA": 55,
    "Checkpoint": 20,
    "TextualInversion": 7,
    "LoCon": 6,
    "DoRA": 2,
    "VAE": 2,
    "Controlnet": 2,
    "Upscaler": 1,
    "Poses": 1,
    "Wildcards": 1,
    "Workflows": 1,
    "Other": 2,
}
BASE_MODEL_WEIGHTS = {
    "SD 1.5": 35,
    "SDXL 1.0": 28,
    "Pony": 18,
    "Flux.1 D": 10,
    "Illustrious": 5,
    "SD 2.1": 2,
    "SD 3.5": 2,
}
RATING_WEIGHTS = {"PG": 60, "PG13": 20, "R": 12, "X": 8}
CREATORS = 500


def zipf_weights(n: int, s: float = 0.9) -> list[float]:
    return [1.0 / (i + 1) ** s for i in range(n)]


# --- synthetic models ---------------------------------------------------------------------


@dataclass
class FileSpec:
    name: str
    size: int
    sha256: bytes
    blake3: bytes
    crc32: bytes
    autov1: bytes
    autov3: bytes
    infohash: bytes
    fp: str
    size_type: str


@dataclass
class VersionSpec:
    id: bytes  # used by the direct path; the records path gets the record id
    name: str
    base_model: str
    description: str
    trained_words: list[str]
    created: int
    files: list[FileSpec]
    downloads: int | None  # None: no model_stats row


@dataclass
class ModelSpec:
    root_id: bytes
    author: int  # index into the creators
    name: str
    type: str
    description: str
    tags: list[str]
    rating: str
    created: int
    versions: list[VersionSpec] = field(default_factory=list)


class Catalog:
    """Deterministic synthetic catalog: the same seed gives the same models."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.keys = [SigningKey.from_seed(self.rng.randbytes(32)) for _ in range(CREATORS)]
        self.dids = [key.did for key in self.keys]
        self.names = [self._username(i) for i in range(CREATORS)]
        self.tag_weights = zipf_weights(len(TAG_WORDS))
        self.creator_weights = zipf_weights(CREATORS, 1.0)

    def _username(self, i: int) -> str:
        return f"{self.rng.choice(TAG_WORDS).replace('_', '')}{self.rng.choice(FILLER)}{i}"

    def _pick(self, weights: dict[str, int]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    def _words(self, n: int) -> str:
        pool = self.rng.choices(FILLER, k=n)
        tags = self.rng.choices(TAG_WORDS, weights=self.tag_weights, k=n // 4)
        words = pool + [t.replace("_", " ") for t in tags]
        self.rng.shuffle(words)
        return " ".join(words).capitalize() + "."

    def _file(self, name: str, model_type: str) -> FileSpec:
        r = self.rng
        big = model_type == "Checkpoint"
        return FileSpec(
            name=f"{name}.safetensors",
            size=r.randint(2, 7) << 30 if big else r.randint(2 << 20, 200 << 20),
            sha256=r.randbytes(32),
            blake3=r.randbytes(32),
            crc32=r.randbytes(4),
            autov1=r.randbytes(4),
            autov3=r.randbytes(32),
            infohash=r.randbytes(20),
            fp=r.choice(("fp16", "fp16", "bf16", "fp32")),
            size_type=r.choice(("pruned", "full")),
        )

    def model(self) -> ModelSpec:
        r = self.rng
        model_type = self._pick(MODEL_TYPE_WEIGHTS)
        tags = sorted(set(r.choices(TAG_WORDS, weights=self.tag_weights, k=r.randint(2, 8))))
        subject = " ".join(t.replace("_", " ").title() for t in tags[: r.randint(1, 2)])
        suffix = r.choice(NAME_SUFFIX.get(model_type, [model_type]))
        name = f"{r.choice(NAME_ADJECTIVES)} {subject} {suffix}"
        if r.random() < 0.4:
            name += f" v{r.randint(1, 9)}"
        created = NOW_MS - r.randint(0, 3 * 365 * DAY_MS)
        spec = ModelSpec(
            root_id=r.randbytes(32),
            author=r.choices(range(CREATORS), weights=self.creator_weights)[0],
            name=name[:200],
            type=model_type,
            description=self._words(r.randint(30, 120)),
            tags=tags,
            rating=self._pick(RATING_WEIGHTS),
            created=created,
        )
        base = self._pick(BASE_MODEL_WEIGHTS)
        stem = "_".join(name.lower().split())[:60]
        version_created = created
        for i in range(r.choices((1, 2, 3), weights=(60, 28, 12))[0]):
            if r.random() < 0.1:
                base = self._pick(BASE_MODEL_WEIGHTS)
            version_created += r.randint(1, 60) * DAY_MS if i else 0
            trigger = [f"{stem.split('_')[-1]}{r.randint(1, 99)}"] if r.random() < 0.6 else []
            trigger += r.sample(tags, k=min(len(tags), r.randint(0, 2)))
            files = [self._file(f"{stem}_v{i + 1}", model_type)]
            if r.random() < 0.15:
                files.append(self._file(f"{stem}_v{i + 1}_fp32", model_type))
            downloads = int(r.paretovariate(1.1) * 20) if r.random() < 0.7 else None
            spec.versions.append(
                VersionSpec(
                    id=r.randbytes(32),
                    name=f"v{i + 1}.0",
                    base_model=base,
                    description=self._words(r.randint(5, 30)) if r.random() < 0.5 else "",
                    trained_words=trigger,
                    created=version_created,
                    files=files,
                    downloads=downloads,
                )
            )
        return spec

    def models(self, n: int) -> Iterator[ModelSpec]:
        for _ in range(n):
            yield self.model()


def search_text_of(spec: ModelSpec) -> str:
    """``search_text`` as ``node.catalog.projection.refresh_search_text`` computes it."""
    tags = sorted({t.strip().lower() for t in spec.tags if t.strip()})
    parts = [spec.description, " ".join(tags)]
    for version in sorted(spec.versions, key=lambda v: (v.created, v.id)):
        parts += [version.name, " ".join(version.trained_words)]
    return "\n".join(p for p in parts if p)


def model_body(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "type": spec.type,
        "description": spec.description,
        "tags": spec.tags,
        "rating": spec.rating,
        "license": "CreativeML OpenRAIL-M",
        "permissions": {"allow_commercial_use": ["Image", "Rent"]},
    }


def file_body(f: FileSpec, position: int) -> dict[str, Any]:
    return {
        "name": f.name,
        "size": f.size,
        "sha256": f.sha256,
        "blake3": f.blake3,
        "crc32": f.crc32,
        "autov1": f.autov1,
        "autov3": f.autov3,
        "infohash": f.infohash,
        "piece_length": 4 << 20,
        "format": "SafeTensor",
        "fp": f.fp,
        "size_type": f.size_type,
        "primary": position == 0,
    }


def version_body(version: VersionSpec, root_id: bytes) -> dict[str, Any]:
    return {
        "model": root_id,
        "name": version.name,
        "base_model": version.base_model,
        "description": version.description,
        "trained_words": version.trained_words,
        "files": [file_body(f, i) for i, f in enumerate(version.files)],
    }


# --- building the catalog -----------------------------------------------------------------


@dataclass
class BuildResult:
    path: str
    models: int
    rows: int  # rows (direct) or records (records) written
    seconds: float
    unit: str = "rows"


def _hexu(value: bytes) -> str:
    return value.hex().upper()


def direct_rows(spec: ModelSpec, did: str) -> dict[str, list[dict[str, Any]]]:
    """The rows the projection would write for ``spec`` (plus its model_stats rows)."""
    out: dict[str, list[dict[str, Any]]] = {
        "models": [
            {
                "root_id": spec.root_id,
                "int_id": candidate(spec.root_id),
                "author": did,
                "revision_id": spec.root_id,
                "name": spec.name,
                "type": spec.type,
                "description": spec.description,
                "rating": spec.rating,
                "license": "CreativeML OpenRAIL-M",
                "poi": False,
                "allow_no_credit": True,
                "allow_commercial_use": "Image,Rent",
                "allow_derivatives": True,
                "allow_different_license": True,
                "created": spec.created,
                "updated": spec.created,
                "search_text": search_text_of(spec),
            }
        ],
        "model_revisions": [
            {"id": spec.root_id, "root_id": spec.root_id, "author": did, "created": spec.created}
        ],
        "model_tags": [{"root_id": spec.root_id, "tag": t} for t in spec.tags],
        "model_versions": [],
        "version_files": [],
        "model_stats": [],
    }
    for v in spec.versions:
        out["model_versions"].append(
            {
                "id": v.id,
                "int_id": candidate(v.id),
                "model_root": spec.root_id,
                "author": did,
                "name": v.name,
                "base_model": v.base_model,
                "description": v.description,
                "trained_words": json.dumps(v.trained_words),
                "created": v.created,
            }
        )
        for position, f in enumerate(v.files):
            sha256 = _hexu(f.sha256)
            out["version_files"].append(
                {
                    "version_id": v.id,
                    "sha256": sha256,
                    "int_id": file_int_id(sha256),
                    "position": position,
                    "name": f.name,
                    "size": f.size,
                    "autov1": _hexu(f.autov1),
                    "autov2": sha256[:10],
                    "autov3": _hexu(f.autov3),
                    "blake3": _hexu(f.blake3),
                    "crc32": _hexu(f.crc32),
                    "format": "SafeTensor",
                    "fp": f.fp,
                    "size_type": f.size_type,
                    "is_primary": position == 0,
                    "infohash": f.infohash.hex(),
                    "piece_length": 4 << 20,
                }
            )
        if v.downloads is not None:
            out["model_stats"].append({"version_id": v.id, "downloads": v.downloads})
    return out


TABLES = {
    t.name: t
    for t in (models, model_revisions, model_tags, model_versions, version_files, model_stats)
}


async def build_direct(db: Database, catalog: Catalog, n: int) -> BuildResult:
    t0 = time.perf_counter()
    rows = 0
    async with db.write() as conn:
        await conn.execute(
            authors.insert(),
            [
                {
                    "did": did,
                    "name": name,
                    "bio": "",
                    "profile_id": catalog.rng.randbytes(32),
                    "profile_created": NOW_MS - 4 * 365 * DAY_MS,
                }
                for did, name in zip(catalog.dids, catalog.names, strict=True)
            ],
        )
    done = 0
    while done < n:
        batch: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        for spec in catalog.models(min(BATCH, n - done)):
            for name, items in direct_rows(spec, catalog.dids[spec.author]).items():
                batch[name] += items
        async with db.write() as conn:
            for name, items in batch.items():
                if items:
                    await conn.execute(TABLES[name].insert(), items)
                    rows += len(items)
        done += len(batch["models"])
        progress(f"direct: {done}/{n} models", t0)
    return BuildResult("direct (Core bulk inserts)", n, rows, time.perf_counter() - t0)


async def build_records(db: Database, catalog: Catalog, n: int) -> BuildResult:
    """Signed records through RecordLog.accept_verified; checks search_text on the way."""
    t0 = time.perf_counter()
    log = RecordLog(db, build_record_types())
    await log.accept_verified(
        sign_record(key, "profile", {"name": name}, created=NOW_MS - 4 * 365 * DAY_MS)
        for key, name in zip(catalog.keys, catalog.names, strict=True)
    )
    specs: list[ModelSpec] = []
    pending: list[Record] = []
    stats: list[dict[str, Any]] = []
    records = 0

    async def flush() -> None:
        nonlocal records
        await log.accept_verified(pending)
        records += len(pending)
        pending.clear()

    for spec in catalog.models(n):
        key = catalog.keys[spec.author]
        model = sign_record(key, "model", model_body(spec), created=spec.created)
        spec.root_id = model.id
        pending.append(model)
        for v in spec.versions:
            version = sign_record(
                key, "model_version", version_body(v, model.id), created=v.created
            )
            v.id = version.id
            pending.append(version)
            if v.downloads is not None:
                stats.append({"version_id": v.id, "downloads": v.downloads})
        specs.append(spec)
        if len(pending) >= RECORD_BATCH:
            await flush()
            if len(specs) % 1000 < 150:
                progress(f"records: {len(specs)}/{n} models", t0)
    if pending:
        await flush()
    async with db.write() as conn:
        if stats:
            await conn.execute(model_stats.insert(), stats)
    seconds = time.perf_counter() - t0
    async with db.read() as conn:
        projected = dict(
            (await conn.execute(sa.select(models.c.root_id, models.c.search_text))).all()
        )
    wrong = [s.name for s in specs if projected.get(s.root_id) != search_text_of(s)]
    if wrong:
        raise SystemExit(f"search_text_of disagrees with the projection on {len(wrong)} models")
    print(f"  check: projected search_text == search_text_of() for all {len(specs)} models")
    return BuildResult(
        f"records (sign_record + RecordLog.accept_verified, {records} records)",
        n,
        records,
        seconds,
        unit="records",
    )


def progress(text: str, t0: float) -> None:
    if not sys.stderr.isatty():
        return
    print(f"  {text} ({time.perf_counter() - t0:.0f} s)", end="\r", file=sys.stderr, flush=True)


# --- databases ----------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    url: str
    size: Callable[[Database], Awaitable[int]]
    cleanup: Callable[[], Awaitable[None]]
    where: str


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


async def sqlite_backend(keep: bool) -> Backend:
    tmp = Path(tempfile.mkdtemp(prefix="civitas_bench_"))
    path = tmp / "civitas.db"

    async def size(db: Database) -> int:
        async with db.read() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return dir_size(tmp)

    async def cleanup() -> None:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)

    return Backend("sqlite", sqlite_url(path), size, cleanup, str(path))


async def postgresql_backend(admin_url: str, keep: bool, timeout_s: float) -> Backend:
    name = f"civitas_bench_{int(time.time())}_{random.randint(0, 9999):04d}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        timeout_ms = int(timeout_s * 1000)
        await conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET statement_timeout = {timeout_ms}')
    url = sa.engine.make_url(admin_url).set(database=name)

    async def size(db: Database) -> int:
        async with db.read() as conn:
            return int(await conn.scalar(sa.text("SELECT pg_database_size(current_database())")))

    async def cleanup() -> None:
        if not keep:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()

    return Backend("postgresql", url.render_as_string(hide_password=False), size, cleanup, name)


async def analyze(db: Database) -> None:
    async with db.engine.connect() as conn:
        if db.is_sqlite:
            await conn.exec_driver_sql("ANALYZE")
            await conn.commit()
        else:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("SET statement_timeout = 0")
            await conn.exec_driver_sql("VACUUM ANALYZE")
            await conn.exec_driver_sql("RESET statement_timeout")  # the database's again


class QueryTimeout(Exception):
    pass


class QueryGuard:
    """Stops a statement that runs longer than ``seconds``.

    SQLite: a timer that calls ``sqlite3.Connection.interrupt()`` (thread-safe) on the
    engine's connections; install it before the first connection is made. PostgreSQL:
    ``statement_timeout``, set on the bench database by :func:`postgresql_backend` (a
    plain SET would be rolled back with the pool's implicit transaction).
    """

    def __init__(self, db: Database, seconds: float) -> None:
        self.seconds = seconds
        self.is_sqlite = db.is_sqlite
        self.raw: list[Any] = []
        if self.is_sqlite:
            sa.event.listen(db.engine.sync_engine, "connect", self._on_connect)

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        self.raw.append(dbapi_connection._connection._conn)  # aiosqlite -> sqlite3

    def _interrupt(self) -> None:
        for conn in self.raw:
            with contextlib.suppress(Exception):  # closed connections
                conn.interrupt()

    async def run(self, call: Awaitable[T]) -> T:
        timer = None
        if self.is_sqlite:
            timer = asyncio.get_running_loop().call_later(self.seconds, self._interrupt)
        try:
            return await call
        except sa.exc.DBAPIError as exc:
            text = str(exc.orig).lower()
            if "interrupted" in text or "statement timeout" in text:
                raise QueryTimeout from None
            raise
        finally:
            if timer is not None:
                timer.cancel()


# --- queries ------------------------------------------------------------------------------

KINDS = {
    "a": "newest, no filter",
    "b": "text, 1-2 words",
    "c": "text + type",
    "d": "base model, most downloaded",
    "e": "tag",
    "f": "cursor pages 2-6, newest",
}
COMMON_WORDS = [t for t in TAG_WORDS[:40] if "_" not in t] + [a.lower() for a in NAME_ADJECTIVES]


def make_query(kind: str, rng: random.Random) -> SearchQuery:
    common_tags = TAG_WORDS[:50]
    if kind == "b":
        return SearchQuery(text=" ".join(rng.sample(COMMON_WORDS, k=rng.randint(1, 2))))
    if kind == "c":
        return SearchQuery(
            text=rng.choice(COMMON_WORDS), types=[rng.choice(("LORA", "LORA", "Checkpoint"))]
        )
    if kind == "d":
        base = rng.choices(list(BASE_MODEL_WEIGHTS), weights=list(BASE_MODEL_WEIGHTS.values()))
        return SearchQuery(base_models=base, sort="most_downloaded")
    if kind == "e":
        return SearchQuery(tag=rng.choice(common_tags))
    return SearchQuery()


@dataclass
class Samples:
    search: list[float] = field(default_factory=list)
    full: list[float] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    timed_out: bool = False  # a request ran past --timeout; the kind stopped there

    def summary(self) -> str:
        done = f"{len(self.search)} requests"
        if self.search:
            done += f", search p50 {pct(self.search, 50):.1f} ms p99 {pct(self.search, 99):.1f} ms"
        return done + (", then one ran past the timeout" if self.timed_out else "")


async def timed(
    guard: QueryGuard, engine: ModelSearch, views: CatalogViews, q: SearchQuery, out: Samples | None
) -> str | None:
    """One GET /api/v1/models: the search, then the serialization of its page."""
    t0 = time.perf_counter()
    roots, cursor = await guard.run(engine.search(q))
    t1 = time.perf_counter()
    await guard.run(views.models_by_root(roots))
    t2 = time.perf_counter()
    if out is not None:
        out.search.append((t1 - t0) * 1000)
        out.full.append((t2 - t0) * 1000)
        out.rows.append(len(roots))
    return cursor


async def run_kind(
    db: Database, guard: QueryGuard, kind: str, n: int, budget_s: float, seed: int
) -> Samples:
    """``n`` timed requests of one kind (fewer if ``budget_s`` runs out), after a warm-up."""
    engine, views = ModelSearch(db), CatalogViews(db)
    rng = random.Random(seed)

    async def one(out: Samples | None) -> None:
        if kind != "f":
            await timed(guard, engine, views, make_query(kind, rng), out)
            return
        cursor = await timed(guard, engine, views, SearchQuery(), None)
        for _ in range(5):  # each page followed by its cursor is one sample
            if cursor is None:
                break
            cursor = await timed(guard, engine, views, SearchQuery(cursor=cursor), out)

    samples = Samples()
    start = time.perf_counter()
    try:
        await one(None)  # warm-up
        while len(samples.search) < n and (
            time.perf_counter() - start < budget_s or not samples.search
        ):
            await one(samples)
    except QueryTimeout:
        samples.timed_out = True
    return samples


def pct(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# --- EXPLAIN ------------------------------------------------------------------------------


@contextlib.contextmanager
def capture_sql(db: Database) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def listener(_conn: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine.sync_engine, "before_cursor_execute", listener)


async def explain(db: Database, guard: QueryGuard, kind: str, seed: int) -> None:
    """Print the plan of the SQL ``ModelSearch.search`` runs for one query of ``kind``.

    SQLite: EXPLAIN QUERY PLAN. PostgreSQL: EXPLAIN (ANALYZE, BUFFERS), or plain EXPLAIN
    if the query runs past the timeout.
    """
    q = make_query(kind, random.Random(seed))
    if kind == "f":
        for _ in range(5):
            _roots, q.cursor = await ModelSearch(db).search(SearchQuery(cursor=q.cursor))
    with capture_sql(db) as seen:
        with contextlib.suppress(QueryTimeout):
            await guard.run(ModelSearch(db).search(q))
    statement, params = next((s, p) for s, p in seen if "FROM models" in s)
    print(f"\n--- EXPLAIN {db.dialect} ({kind}) {KINDS[kind]}: {q}")
    print(" ".join(statement.split()))
    prefixes = (
        ["EXPLAIN QUERY PLAN "] if db.is_sqlite else ["EXPLAIN (ANALYZE, BUFFERS) ", "EXPLAIN "]
    )
    for prefix in prefixes:
        try:
            async with db.read() as conn:
                plan = (await guard.run(conn.exec_driver_sql(prefix + statement, params))).all()
        except QueryTimeout:
            print(f"    ({prefix.strip()} ran past {guard.seconds:g} s)")
            continue
        for row in plan:
            print("   ", row[-1] if db.is_sqlite else row[0])
        break


# --- main ---------------------------------------------------------------------------------


@dataclass
class Report:
    backend: str
    build: BuildResult
    size: int
    results: dict[str, Samples]


async def bench_backend(backend: Backend, args: argparse.Namespace) -> Report:
    db = Database(backend.url)
    guard = QueryGuard(db, args.timeout)
    try:
        await db.migrate()
        catalog = Catalog(args.seed)
        builder = build_records if args.build == "records" else build_direct
        build = await builder(db, catalog, args.models)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        t0 = time.perf_counter()
        await analyze(db)
        analyzed = time.perf_counter() - t0
        print(
            f"[{backend.name}] built {build.models} models via {build.path}: "
            f"{build.seconds:.1f} s, {build.models / build.seconds:,.0f} models/s, "
            f"{build.rows / build.seconds:,.0f} {build.unit}/s; ANALYZE {analyzed:.1f} s;"
            f" db {backend.where}"
        )
        results: dict[str, Samples] = {}
        for kind in KINDS:
            results[kind] = r = await run_kind(
                db, guard, kind, args.queries, args.kind_budget, args.seed
            )
            print(f"[{backend.name}] ({kind}) {KINDS[kind]}: {r.summary()}")
        for kind, r in results.items():
            if kind in args.explain or r.timed_out or (r.search and pct(r.search, 99) > SLOW_MS):
                await explain(db, guard, kind, args.seed)
        return Report(backend.name, build, await backend.size(db), results)
    finally:
        await db.close()
        await backend.cleanup()


def print_table(reports: list[Report]) -> None:
    head = (
        f"{'backend':10} {'kind':33} {'n':>4} {'rows':>4} | {'search ms':^20} |"
        f" {'search + serialize ms':^20}"
    )
    sub = f"{'':10} {'':33} {'':>4} {'':>4} |" + f" {'p50':>6} {'p99':>6} {'mean':>6} |" * 2
    print(f"\n{head}\n{sub}\n{'-' * len(sub)}")
    for report in reports:
        for kind, s in report.results.items():
            if not s.search:
                print(f"{report.backend:10} ({kind}) {KINDS[kind]:29} {s.summary()}")
                continue
            cells = [
                f" {pct(v, 50):6.1f} {pct(v, 99):6.1f} {sum(v) / len(v):6.1f} |"
                for v in (s.search, s.full)
            ]
            rows = sum(s.rows) / len(s.rows)
            print(
                f"{report.backend:10} ({kind}) {KINDS[kind]:29} {len(s.search):4} {rows:4.0f} |"
                + "".join(cells)
                + (" then a request ran past the timeout" if s.timed_out else "")
            )
    print()
    for report in reports:
        print(
            f"{report.backend}: {report.build.models} models, database size "
            f"{report.size / 2**20:,.1f} MiB; build {report.build.path}, "
            f"{report.build.models / report.build.seconds:,.0f} models/s"
        )


async def main_async(args: argparse.Namespace) -> int:
    names = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    reports = []
    for name in names:
        if name == "sqlite":
            backend = await sqlite_backend(args.keep)
        else:
            backend = await postgresql_backend(args.pg_url, args.keep, args.timeout)
        if args.keep:
            print(f"[{name}] keeping the database: {backend.where}")
        reports.append(await bench_backend(backend, args))
    print_table(reports)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per kind")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="server and database to connect")
    parser.add_argument("--build", choices=("direct", "records"), default="direct")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument(
        "--explain",
        nargs="?",
        const="".join(KINDS),
        default="",
        metavar="KINDS",
        help=f"print the query plans of these kinds (default all); kinds with p99 > {SLOW_MS} ms"
        " or a timeout always get one",
    )
    parser.add_argument(
        "--kind-budget", type=float, default=15.0, help="seconds at most per kind and backend"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds at most per request; a kind stops"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
