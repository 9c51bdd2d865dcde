"""One typed configuration, from ``config.toml``, then ``CIVITAS_*`` variables, then flags.

Each section is a dataclass whose fields carry their documentation; ``civitas init``
writes every setting out, commented, from the same definitions. An unknown key, a value
of the wrong type or out of range is a :class:`ConfigError` that names the key.
Environment variables are ``CIVITAS_<SECTION>_<KEY>`` (``CIVITAS_SERVER_PORT=8081``).
"""

import dataclasses
import ipaddress
import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("logfmt", "json")


def setting(default: Any, doc: str, check: Callable[[Any], str | None] | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "check": check})


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a port number from 0 to 65535"


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _ratings(value: str) -> str | None:
    bad = [r for r in value.split(",") if r.strip() and r.strip() not in ("PG", "PG13", "R", "X")]
    return f"unknown rating {bad[0]!r}: use PG, PG13, R or X" if bad else None


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _networks(value: str) -> str | None:
    for part in value.split(","):
        if part.strip():
            try:
                ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                return f"{part.strip()!r} is not an IP address or CIDR network"
    return None


def _database_url(value: str) -> str | None:
    if value == "" or value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return None
    return "must be empty (SQLite in the home), sqlite+aiosqlite://… or postgresql+asyncpg://…"


@dataclass
class NodeSection:
    name: str = setting(
        socket.gethostname() or "civitas", "The node's display name, shown to peers and users."
    )
    public_url: str = setting(
        "", "Base URL where others reach this node; empty: http://HOST:PORT of [server]."
    )


@dataclass
class ServerSection:
    host: str = setting("127.0.0.1", "Address the HTTP server listens on.")
    port: int = setting(8080, "TCP port the HTTP server listens on (0: any free port).", _port)
    max_body_bytes: int = setting(
        1024 * 1024, "Largest request body accepted by JSON endpoints, in bytes.", _positive
    )
    max_concurrent_ingests: int = setting(
        4,
        "Most model files received, hashed and checked at once; one more upload is answered "
        "503 with Retry-After, a publish from the node's disk waits.",
        _positive,
    )
    max_uploads_per_account: int = setting(
        2,
        "Most model files one account may upload at once; one more is answered 429 with "
        "Retry-After before its body is read.",
        _positive,
    )
    min_upload_bytes_per_s: int = setting(
        16 * 1024,
        "Slowest average rate, in bytes a second, a model upload may keep after its first "
        "30 s; a slower one is answered 408 and its ingest slot freed.",
        _positive,
    )
    max_concurrent_decodes: int = setting(
        2,
        "Most images decoded at once (upload previews, training inputs, compute outputs, "
        "resized previews, blurhashes); more wait their turn.",
        _positive,
    )

    trusted_proxies: str = setting(
        "",
        "Comma-separated addresses or CIDRs of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto headers are believed; empty: none (the socket's address counts).",
        _networks,
    )
    header_timeout_s: int = setting(
        10,
        "Seconds a client has to send a request's headers, from when the connection opens "
        "or the previous answer ends.",
        _positive,
    )
    body_timeout_s: int = setting(
        30, "Seconds a request body may stall while the node waits for its next byte.", _positive
    )
    max_connections_per_address: int = setting(
        16,
        "Most open connections from one client address (an IPv6 client: its /64; trusted "
        "proxies exempt).",
        _positive,
    )
    send_timeout_s: int = setting(
        60,
        "Seconds a client may leave what the node sends it unread (the socket's send queue "
        "not moving) before its connection is closed.",
        _positive,
    )
    shutdown_timeout_s: int = setting(
        10,
        "Seconds a stop (SIGTERM, Ctrl-C) may take: new requests are refused at once, "
        "requests still running after half of it are ended (uploads answered 503).",
        _positive,
    )


@dataclass
class DatabaseSection:
    url: str = setting(
        "",
        "Database URL; empty: SQLite at HOME/civitas.db. PostgreSQL: "
        "postgresql+asyncpg://USER@HOST:5432/DB",
        _database_url,
    )


@dataclass
class LogSection:
    level: str = setting("info", "Log level: debug, info, warning or error.", _one_of(*LOG_LEVELS))
    format: str = setting("logfmt", "One line per event: logfmt or json.", _one_of(*LOG_FORMATS))


@dataclass
class AuthSection:
    session_hours: int = setting(24 * 14, "How long a web UI login lasts, in hours.", _positive)
    login_failures_per_account: int = setting(
        5,
        "Wrong passwords an account takes from one client address before each further try "
        "from there must wait, twice as long each time (429 with Retry-After); ten times as "
        "many from addresses that never logged into it hold up only those addresses.",
        _positive,
    )
    login_failures_per_address: int = setting(
        20,
        "Wrong passwords one client address may send before it must wait the same way.",
        _positive,
    )
    login_max_delay_s: int = setting(
        900, "Longest wait imposed after wrong passwords, in seconds.", _positive
    )
    hash_concurrency: int = setting(
        2, "Password hashes computed at once (each in a thread, off the event loop).", _positive
    )
    login_queue: int = setting(
        32,
        "Logins that may wait for a hashing thread; more are answered 429. Logins from "
        "addresses that logged into the account before wait in a queue of their own, as "
        "large and served first, so strangers cannot fill it.",
        _positive,
    )


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 or more"


@dataclass
class TorrentSection:
    enabled: bool = setting(True, "Run the BitTorrent engine (seeding and fetching).")
    listen_host: str = setting("0.0.0.0", "Address BitTorrent peers connect to.")  # noqa: S104
    listen_port: int = setting(6881, "BitTorrent TCP/uTP port (0: any free port).", _port)
    dht: bool = setting(True, "Use the BitTorrent DHT to find peers.")
    allow_lan: bool = setting(
        False, "Accept peers on private and loopback addresses (a LAN federation)."
    )
    upload_rate_limit: int = setting(
        0, "Upload limit in bytes per second (0: none).", _non_negative
    )
    download_rate_limit: int = setting(
        0, "Download limit in bytes per second (0: none).", _non_negative
    )
    connections_limit: int = setting(200, "Most peer connections at once.", _positive)
    seed_ratio_limit: int = setting(
        0,
        "Stop seeding a fetched file at this upload ratio, in percent (0: forever).",
        _non_negative,
    )
    seed_time_limit_hours: int = setting(
        0, "Stop seeding a fetched file after this many hours (0: forever).", _non_negative
    )
    fetch_quota_bytes: int = setting(
        0, "Disk space fetched files may use, in bytes (0: no quota).", _non_negative
    )
    seed: str = setting(
        "all",
        "Which files to seed: all, published (only this node's own), or none.",
        _one_of("all", "published", "none"),
    )


@dataclass
class FederationSection:
    sync_interval_s: int = setting(
        30, "Seconds between full pulls from every peer (pushes go out at once).", _positive
    )
    max_pushed_per_minute: int = setting(
        6000, "Most records one peer may push to this node's inbox per minute.", _positive
    )
    author_records_per_day: int = setting(
        0,
        "Most records accepted from peers per author key per day (0: no quota).",
        _non_negative,
    )
    auto_connect: bool = setting(
        False, "Peer with every node announced through the federation (off: only those added)."
    )
    auto_connect_private: bool = setting(
        False,
        "Let auto_connect reach announced nodes on private and loopback addresses (a LAN "
        "federation); otherwise only peers an operator adds may be on them.",
    )
    pull_concurrency: int = setting(8, "Most peers pulled from at once in a round.", _positive)
    pull_request_timeout_s: int = setting(
        30, "Seconds a peer has to answer one request (a records page, a push).", _positive
    )
    pull_round_time_s: int = setting(
        120,
        "Seconds one peer's turn in a round may take (pull and push); then it fails.",
        _positive,
    )
    pull_pages_per_round: int = setting(
        100, "Most record pages read from one peer in a round (the rest: next round).", _positive
    )
    pull_records_per_round: int = setting(
        20_000, "Most records read from one peer in a round (the rest: next round).", _positive
    )
    pull_pages_per_minute: int = setting(
        300, "Most record pages read from one peer per minute, over all rounds.", _positive
    )
    pull_records_per_minute: int = setting(
        60_000, "Most records read from one peer per minute, over all rounds.", _positive
    )
    unknown_types_per_minute: int = setting(
        200,
        "Most records of types this node does not know accepted from one peer per minute "
        "(pulled or pushed); more are refused as unknown_type_over_budget.",
        _non_negative,
    )

    wanted_max_bytes: int = setting(
        50 * 1024 * 1024,
        "Largest wanted file (an image preview a record needs) fetched from peers, in bytes.",
        _positive,
    )
    wanted_concurrency: int = setting(4, "Most wanted files fetched from peers at once.", _positive)
    wanted_reconcile_s: int = setting(
        300,
        "Seconds between checks that every shown image's file is held or wanted (also at start).",
        _positive,
    )


@dataclass
class ComputeSection:
    enabled: bool = setting(True, "Queue generation and training jobs for registered workers.")
    lease_s: int = setting(
        120,
        "Seconds a worker holds a job without reporting progress before it is requeued.",
        _positive,
    )
    max_failures: int = setting(
        3, "Failures or expired leases after which a job fails for good.", _positive
    )
    max_pixels: int = setting(
        4 * 1024 * 1024,
        "Most pixels one generation job may ask for (width x height x count).",
        _positive,
    )
    per_requester_running: int = setting(
        2, "Most jobs of one requester leased or running at once.", _positive
    )
    max_queued_per_account: int = setting(
        50, "Most jobs one member may have waiting in the queue (more: 429).", _positive
    )
    max_train_images: int = setting(200, "Most images in one training job.", _positive)
    max_train_bytes: int = setting(
        1024 * 1024 * 1024,
        "Most bytes of images (decompressed, zip entries included) one training job may upload.",
        _positive,
    )
    max_input_bytes_per_account: int = setting(
        2 * 1024 * 1024 * 1024,
        "Most bytes of training images one member's unfinished jobs may hold on the node; a "
        "job that would pass it is refused (413) before its images are kept.",
        _positive,
    )
    max_zip_ratio: int = setting(
        50,
        "Highest compression ratio a zip entry over 1 MiB may claim; a higher one is refused "
        "unread.",
        _positive,
    )
    queue_timeout_hours: int = setting(
        24, "A job still queued after this many hours expires.", _positive
    )
    max_output_bytes: int = setting(
        512 * 1024 * 1024, "Largest single output (image or LoRA) a worker may upload.", _positive
    )
    max_worker_uploads: int = setting(
        2, "Most output uploads one worker may send at once (more: 429).", _positive
    )
    upload_timeout_s: int = setting(
        600, "Seconds one output upload may take from its first byte to its last.", _positive
    )


@dataclass
class ModerationSection:
    grace_hours: int = setting(
        72,
        "Hours a taken-down file waits in quarantine before it is deleted (unless a moderator "
        "confirms sooner); non-consensual intimate imagery and illegal content: at once.",
        _non_negative,
    )
    notices_per_day: int = setting(
        20,
        "Most takedown notices one key, account, address or peer node may file in a day.",
        _positive,
    )
    proof_allow_private: bool = setting(
        False, "Let proof URL checks reach private and loopback addresses (tests, LANs)."
    )
    list_interval_s: int = setting(
        60, "Seconds between reads of subscribed takedown lists that have a URL.", _positive
    )
    refuse_ratings: str = setting(
        "",
        "Content ratings this node refuses, comma-separated (e.g. X or R,X): refused when "
        "published here, held (kept, not shown or relayed) when they arrive from peers.",
        _ratings,
    )
    refuse_poi: bool = setting(False, "Refuse models of real persons (poi) the same way.")


@dataclass
class AccountsSection:
    registration: str = setting(
        "closed",
        "Who may create an account on this node's web UI and API: open (anyone), invite "
        "(with an invite code an admin made) or closed (only `civitas user add`).",
        _one_of("open", "invite", "closed"),
    )
    invite_days: int = setting(7, "Days an invite code stays valid (one account each).", _positive)
    signups_per_address: int = setting(
        3,
        "Accounts one client address (an IPv6 /64) may create before each further sign-up "
        "from it must wait, an hour doubled each time (429 with Retry-After).",
        _positive,
    )


@dataclass
class MetricsSection:
    public: bool = setting(
        False,
        "Serve GET /metrics (Prometheus) to anyone; false: only with the admin token (401 "
        "without it). Keep it false on a public port, or scrape through a private proxy.",
    )


@dataclass
class Config:
    home: Path
    node: NodeSection = field(default_factory=NodeSection)
    server: ServerSection = field(default_factory=ServerSection)
    database: DatabaseSection = field(default_factory=DatabaseSection)
    log: LogSection = field(default_factory=LogSection)
    auth: AuthSection = field(default_factory=AuthSection)
    torrent: TorrentSection = field(default_factory=TorrentSection)
    federation: FederationSection = field(default_factory=FederationSection)
    compute: ComputeSection = field(default_factory=ComputeSection)
    moderation: ModerationSection = field(default_factory=ModerationSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    accounts: AccountsSection = field(default_factory=AccountsSection)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.home / 'civitas.db'}"

    @property
    def public_url(self) -> str:
        if self.node.public_url:
            return self.node.public_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}"


SECTIONS: dict[str, type] = {
    f.name: f.type
    for f in dataclasses.fields(Config)
    if isinstance(f.type, type) and f.name != "home"
}
Overrides = Mapping[tuple[str, str], Any]


def _coerce(section: str, key: str, value: Any, want: type, source: str) -> Any:
    name = f"{section}.{key}"
    if isinstance(value, str) and want is int and source == "environment":
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"{name} (from {source}): {value!r} is not an integer") from None
    if want is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{name} (in {source}) must be an integer, not {value!r}")
    if isinstance(value, str) and want is bool and source == "environment":
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{name} (from {source}): {value!r} is not true or false")
        value = value.lower() in ("true", "1", "yes")
    if want is bool and not isinstance(value, bool):
        raise ConfigError(f"{name} (in {source}) must be true or false, not {value!r}")
    if want is str and not isinstance(value, str):
        raise ConfigError(f"{name} (in {source}) must be a string, not {value!r}")
    return value


def _apply(cfg: Config, section: str, key: str, value: Any, source: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"unknown section [{section}] in {source}; known: {', '.join(SECTIONS)}")
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
    if key not in fields:
        raise ConfigError(
            f"unknown setting {section}.{key} in {source}; known in [{section}]: "
            f"{', '.join(fields)}"
        )
    f = fields[key]
    want = f.type
    assert isinstance(want, type)
    value = _coerce(section, key, value, want, source)
    check = f.metadata.get("check")
    problem = check(value) if check else None
    if problem:
        raise ConfigError(f"{section}.{key} (in {source}) {problem}; got {value!r}")
    setattr(getattr(cfg, section), key, value)


def config_path(home: Path) -> Path:
    return home / "config.toml"


def load_config(
    home: Path,
    overrides: Overrides | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load ``HOME/config.toml`` (if present), then environment, then ``overrides``."""
    cfg = Config(home=home)
    path = config_path(home)
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {section!r} must be a [section] table")
            for key, value in values.items():
                _apply(cfg, section, key, value, str(path))
    env = os.environ if environ is None else environ
    for var, value in env.items():
        if not var.startswith("CIVITAS_"):
            continue
        rest = var[len("CIVITAS_") :].lower()
        for section in SECTIONS:
            if rest.startswith(section + "_"):
                _apply(cfg, section, rest[len(section) + 1 :], value, "environment")
    for (section, key), value in (overrides or {}).items():
        if value is not None:
            _apply(cfg, section, key, value, "command line")
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_config(cfg: Config) -> str:
    """A config.toml with every setting written out and documented."""
    lines = [
        "# Civitas node configuration.",
        "# Every setting is listed with its default. Environment variables",
        "# CIVITAS_<SECTION>_<KEY> override this file; command-line flags override both.",
    ]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for f in dataclasses.fields(SECTIONS[section]):
            lines.append(f"# {f.metadata['doc']}")
            lines.append(f"{f.name} = {_toml_value(getattr(getattr(cfg, section), f.name))}")
    return "\n".join(lines) + "\n"


def all_settings() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
