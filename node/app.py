"""Composition root: the one place that builds services and wires them together.

:func:`build_node` makes the services from a config and a home; :func:`create_app`
mounts every package's routes on an aiohttp application whose ``cleanup_ctx`` checks the
database at startup and disposes of it at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from aiohttp import web

from node import __version__, admin_pages, api_docs
from node.accounts import pages as account_pages
from node.accounts import routes as account_routes
from node.accounts.passwords import PasswordHasher
from node.accounts.service import AccountService
from node.accounts.signup import SignUps
from node.accounts.throttle import LoginThrottle
from node.catalog import download_pages, magnet_records
from node.catalog import pages as catalog_pages
from node.catalog import projection as catalog_projection
from node.catalog import routes as catalog_routes
from node.catalog.blurhashes import Blurhashes
from node.catalog.fetch import FetchService
from node.catalog.ingest_limits import ImageDecodes, IngestSlots
from node.catalog.magnet_records import MagnetRecords
from node.catalog.needed_files import CatalogNeeds
from node.catalog.previews import PreviewCache
from node.catalog.publish import Publisher
from node.catalog.search import ModelSearch
from node.catalog.service import CatalogService
from node.catalog.views import CatalogViews
from node.compute import pages as compute_pages
from node.compute import routes as compute_routes
from node.compute.service import Compute, build_compute
from node.config import Config
from node.db import Database, head_revision
from node.errors import DatabaseError
from node.home import Home
from node.http import (
    TrustedProxies,
    error_middleware,
    json_ok,
    make_body_timeout_middleware,
    make_forwarded_middleware,
    require_admin,
)
from node.metrics import routes as metrics_routes
from node.metrics.collect import NodeMetrics
from node.moderation import pages as moderation_pages
from node.moderation import projection as moderation_projection
from node.moderation import routes as moderation_routes
from node.moderation.enforcement import Enforcer
from node.moderation.service import ModerationService
from node.openapi import openapi_json
from node.p2p import identity, rotation, torrent_routes
from node.p2p import routes as p2p_routes
from node.p2p.federation import announce, wanted_routes
from node.p2p.federation import routes as federation_routes
from node.p2p.federation.budgets import PullLimits
from node.p2p.federation.service import Federation, Peer
from node.p2p.federation.signing import RequestVerifier
from node.p2p.federation.wanted import WantedFiles
from node.p2p.filestore import FileStore
from node.p2p.keys import SigningKey
from node.p2p.log import RecordLog
from node.p2p.projections import RecordTypes
from node.p2p.tables import torrents
from node.p2p.torrent_routes import TorrentIndex
from node.p2p.torrents import TorrentEngine
from node.p2p.tracker import Swarms
from node.render import RENDERER, Renderer, security_headers, web_dir

log = logging.getLogger("civitas.node")


def build_record_types() -> RecordTypes:
    """Every record type this software knows, with its rules and projections."""
    types = RecordTypes()
    identity.register(types)
    rotation.register(types)
    announce.register(types)
    catalog_projection.register(types)
    moderation_projection.register(types)
    return types


@dataclass
class Node:
    config: Config
    home: Home
    node_key: SigningKey
    db: Database
    log: RecordLog
    accounts: AccountService
    signups: SignUps
    store: FileStore
    catalog: CatalogService
    torrents: TorrentIndex
    engine: TorrentEngine | None
    federation: Federation
    wanted: WantedFiles
    moderation: ModerationService
    compute: Compute


def build_node(config: Config, home: Home, node_key: SigningKey | None = None) -> Node:
    db = Database(config.database_url)
    record_log = RecordLog(db, build_record_types())
    accounts = AccountService(
        db,
        record_log,
        home,
        config.auth.session_hours,
        PasswordHasher(config.auth.hash_concurrency, config.auth.login_queue),
        LoginThrottle(
            per_account=config.auth.login_failures_per_account,
            per_address=config.auth.login_failures_per_address,
            max_delay_s=config.auth.login_max_delay_s,
        ),
    )
    signups = SignUps(
        accounts,
        config.accounts.registration,
        invite_days=config.accounts.invite_days,
        per_address=config.accounts.signups_per_address,
    )
    store = FileStore(home.path / "files", db)
    store.public = CatalogNeeds(db)  # blobs and web seeds serve what a visible record needs
    index = TorrentIndex(db, store)
    engine = (
        TorrentEngine(config.torrent, home.path / "torrents") if config.torrent.enabled else None
    )
    key = node_key or home.node_key()

    async def file_sources() -> list[Peer]:  # late-bound: the federation is built below
        return await federation.list_peers()

    wanted = WantedFiles(
        db,
        store,
        file_sources,
        CatalogNeeds(db),
        max_bytes=config.federation.wanted_max_bytes,
        concurrency=config.federation.wanted_concurrency,
        reconcile_s=config.federation.wanted_reconcile_s,
        allow_private_announced=config.federation.auto_connect_private,
    )
    federation = Federation(
        db,
        record_log,
        key,
        store,
        interval_s=config.federation.sync_interval_s,
        max_pushed_per_minute=config.federation.max_pushed_per_minute,
        name=config.node.name,
        auto_connect=config.federation.auto_connect,
        author_records_per_day=config.federation.author_records_per_day,
        wanted=wanted,
        limits=PullLimits.of(config.federation),
    )
    federation.auto_connect_private = config.federation.auto_connect_private
    federation.torrent_hints = index.remote_hints  # peers' BitTorrent addresses, for magnets
    fetcher = FetchService(db, index, engine, config.torrent, peer_urls=federation.peer_urls)
    fetcher.find_records = MagnetRecords(record_log).fetch  # magnets from unpeered nodes
    decodes = ImageDecodes(config.server.max_concurrent_decodes)  # one pool, node-wide
    views = CatalogViews(db, Blurhashes(db, store, decodes))
    views.torrent_index = index
    enforcer = Enforcer(
        db,
        record_log,
        store,
        home.path / "quarantine",
        grace_s=config.moderation.grace_hours * 3600,
    )
    enforcer.refuse_ratings = frozenset(
        r.strip() for r in config.moderation.refuse_ratings.split(",") if r.strip()
    )
    enforcer.refuse_poi = config.moderation.refuse_poi
    enforcer.notices_per_day = config.moderation.notices_per_day
    fetcher.gate = enforcer  # a listed file is not fetched (nor kept if listed meanwhile)
    store.on_changed = fetcher.stop_seeding  # an in-place file changed: its torrent stops
    index.gate = enforcer  # nor its .torrent, web seed or tracker entry handed out
    record_log.gate = enforcer  # new records a takedown here covers are held on arrival
    moderation = ModerationService(
        db,
        record_log,
        key,
        enforcer,
        notices_per_day=config.moderation.notices_per_day,
        proof_allow_private=config.moderation.proof_allow_private,
        list_interval_s=config.moderation.list_interval_s,
    )
    moderation.author_key = home.author_key
    _wire_enforcer(enforcer, engine, fetcher, federation, record_log)
    catalog = CatalogService(
        publisher=Publisher(
            db,
            record_log,
            store,
            gate=enforcer,
            on_stored=fetcher.seed_published,
            slots=IngestSlots(
                config.server.max_concurrent_ingests,
                config.server.max_uploads_per_account,
                config.server.min_upload_bytes_per_s,
            ),
            decodes=decodes,
        ),
        search_index=ModelSearch(db),
        views=views,
        store=store,
        previews=PreviewCache(home.path / "previews", decodes=decodes),
        accounts=accounts,
        author_key=home.author_key,
        fetcher=fetcher,
    )
    compute = build_compute(
        config.compute,
        catalog.publisher,
        home.author_key,
        home.path / "compute" / "outputs",
        key.did,
        token_live=accounts.token_live,
    )
    return Node(
        config=config,
        home=home,
        node_key=key,
        db=db,
        log=record_log,
        accounts=accounts,
        signups=signups,
        store=store,
        catalog=catalog,
        torrents=index,
        engine=engine,
        federation=federation,
        wanted=wanted,
        moderation=moderation,
        compute=compute,
    )


def _wire_enforcer(
    enforcer: Enforcer,
    engine: TorrentEngine | None,
    fetcher: FetchService,
    federation: Federation,
    record_log: RecordLog,
) -> None:
    """Takedowns stop torrents; reversals re-seed and fetch again from peers."""
    if engine is not None:
        enforcer.stop_torrent = engine.remove

    async def reseed(sha256: str) -> None:
        path = await fetcher.store.local_path(sha256)
        async with fetcher.db.read() as conn:
            infohash = await conn.scalar(
                sa.select(torrents.c.infohash).where(torrents.c.sha256 == sha256)
            )
        found = await fetcher.meta(infohash) if infohash else None
        if path is not None and found is not None:
            fetcher.seed_published(found[0], path, sha256)

    async def refetch_file(sha256: str) -> None:
        await fetcher.fetch(sha256)

    async def refetch_record(record_id: bytes) -> bytes | None:
        raw = await federation.fetch_record(record_id)
        if raw is not None:
            await record_log.restore(record_id, raw)
        return raw

    enforcer.reseed = reseed
    enforcer.refetch_file = refetch_file
    enforcer.refetch_record = refetch_record


async def check_schema(db: Database) -> None:
    await db.check()
    current, head = await db.current_revision(), head_revision()
    if current is None:
        raise DatabaseError(
            f"the database at {db.safe_url} holds no Civitas schema: if this node's database "
            "was lost or replaced, restore it from a backup; `civitas migrate` would start "
            "an empty one"
        )
    if current != head:
        raise DatabaseError(
            f"the database schema is at {current or 'nothing'}, this software needs {head}: "
            "run `civitas migrate` (with the node stopped)"
        )


NODE = web.AppKey("node", Node)


def set_public_url(app: web.Application, url: str) -> None:
    """Where others reach this node, once known (the configured URL, or the bound port)."""
    url = url.rstrip("/")
    app[p2p_routes.NODE_INFO].public_url = url
    app[NODE].catalog.views.base_url = url
    app[NODE].torrents.base_url = url
    app[NODE].federation.public_url = url
    _set_peer_hint(app)


def _set_peer_hint(app: web.Application) -> None:
    """Magnets name this node's BitTorrent address (x.pe) once its port is known."""
    from urllib.parse import urlsplit

    node, node_info = app[NODE], app[p2p_routes.NODE_INFO]

    host = urlsplit(node.torrents.base_url).hostname
    if node.engine is not None and node.engine.session is not None and host:
        node.torrents.peer_hints = [f"{host}:{node.engine.listen_port}"]
        node_info.bittorrent = node.torrents.peer_hints[0]


def _trusted_swarm_peers(node: Node) -> Callable[[], list[str]]:
    """What the tracker lists first and never lets a crowd push out: this node's own
    BitTorrent session and its federation peers' (their /.well-known "bittorrent")."""

    def trusted() -> list[str]:
        return [*node.torrents.peer_hints, *node.federation.torrent_hints.values()]

    return trusted


async def healthz(request: web.Request) -> web.Response:
    await request.app[NODE].db.check()
    return json_ok({"ok": True})


async def admin_status(request: web.Request) -> web.Response:
    require_admin(request)
    node = request.app[NODE]
    return json_ok(
        {
            **await request.app[p2p_routes.NODE_INFO].describe(),
            "database": node.db.dialect,
            "records": await node.log.count(),
            "users": len(await node.accounts.list_users()),
        }
    )


def create_app(node: Node, admin_token: str) -> web.Application:
    metrics = NodeMetrics(node.db, node.federation, node.engine)
    app = web.Application(
        client_max_size=node.config.server.max_body_bytes,
        middlewares=[
            metrics.middleware,  # outermost: sees every answer's final status
            error_middleware,
            make_body_timeout_middleware(node.config.server.body_timeout_s),
            make_forwarded_middleware(TrustedProxies(node.config.server.trusted_proxies)),
            account_routes.make_auth_middleware(node.accounts, admin_token),
        ],
    )
    app[NODE] = node
    app[account_routes.ACCOUNTS] = node.accounts
    app[account_routes.SIGNUPS] = node.signups
    app[catalog_routes.CATALOG] = node.catalog
    app[compute_routes.COMPUTE] = node.compute
    app[p2p_routes.NODE_INFO] = p2p_routes.NodeInfo(
        did=node.node_key.did,
        name=node.config.node.name,
        version=__version__,
        public_url=node.config.public_url,
        log=node.log,
    )

    async def database_ctx(_app: web.Application) -> AsyncIterator[None]:
        await check_schema(node.db)
        await node.log.ensure_epoch()
        node.store.prepare()
        removed = await node.store.clean()
        log.info("database ready", extra={"url": node.db.safe_url, "orphans_removed": removed})
        yield
        node.accounts.hasher.close()
        await node.db.close()

    async def torrent_ctx(_app: web.Application) -> AsyncIterator[None]:
        if node.engine is None:
            yield
            return
        await node.engine.start()
        _set_peer_hint(_app)
        await node.catalog.fetcher.start()
        yield
        await node.catalog.fetcher.stop()
        await node.engine.stop()

    app.cleanup_ctx.append(database_ctx)

    async def federation_ctx(_app: web.Application) -> AsyncIterator[None]:
        await node.federation.start()
        yield
        await node.federation.stop()

    async def wanted_ctx(_app: web.Application) -> AsyncIterator[None]:
        await node.wanted.start()
        yield
        await node.wanted.stop()

    async def moderation_ctx(_app: web.Application) -> AsyncIterator[None]:
        await node.moderation.start()
        yield
        await node.moderation.stop()

    app.cleanup_ctx.append(torrent_ctx)
    app.cleanup_ctx.append(federation_ctx)
    app.cleanup_ctx.append(wanted_ctx)
    app.cleanup_ctx.append(moderation_ctx)

    async def compute_ctx(_app: web.Application) -> AsyncIterator[None]:
        await node.compute.start()
        yield
        await node.compute.stop()

    app.cleanup_ctx.append(compute_ctx)
    set_public_url(app, node.config.public_url)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/admin/status", admin_status)
    app.router.add_get("/api/openapi.json", openapi_json)
    metrics_routes.add_routes(app, metrics, public=node.config.metrics.public)
    p2p_routes.add_routes(app)
    account_routes.add_routes(app)
    catalog_routes.add_routes(app)
    magnet_records.add_routes(app, node.db, node.log)
    api_docs.add_routes(app)
    compute_routes.add_routes(app)
    torrent_routes.add_routes(app, node.torrents, Swarms(trusted=_trusted_swarm_peers(node)))
    federation_routes.add_routes(app, node.federation, RequestVerifier(node.node_key.did))
    wanted_routes.add_routes(app, node.wanted)
    moderation_routes.add_routes(app, node.moderation)
    # Web UI: server-rendered pages over the same services, and their static files.
    app[RENDERER] = Renderer(web_dir(), signup_open=lambda: node.signups.open)
    app.on_response_prepare.append(security_headers)
    app.router.add_static("/static", app[RENDERER].static_dir)
    account_pages.add_routes(app)
    catalog_pages.add_routes(app)
    moderation_pages.add_routes(app)
    admin_pages.add_routes(app)
    download_pages.add_routes(app)
    compute_pages.add_routes(app)
    return app
