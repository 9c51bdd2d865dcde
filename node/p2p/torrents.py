"""The node's one libtorrent session: seeding, downloading, resume data, alerts.

libtorrent writes a byte to a pipe when alerts are ready (never calling Python from its
own threads); that only wakes the asyncio task that pops alerts and hands each to its
handler through a dispatch table (the Tribler pattern, without the long if-chain).
Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libtorrent as lt

from node.config import TorrentSection
from node.p2p.torrentmeta import TorrentMeta
from node.tasks import stop_tasks

log = logging.getLogger("civitas.torrents")

SESSION_CLOSE_TIMEOUT_S = 10.0  # a libtorrent session may take this long to close

PRIVATE_RANGES = (
    ("10.0.0.0", "10.255.255.255"),
    ("172.16.0.0", "172.31.255.255"),
    ("192.168.0.0", "192.168.255.255"),
    ("127.0.0.0", "127.255.255.255"),
    ("169.254.0.0", "169.254.255.255"),
    ("100.64.0.0", "100.127.255.255"),
)
STATES = {
    lt.torrent_status.states.checking_files: "checking",
    lt.torrent_status.states.downloading_metadata: "metadata",
    lt.torrent_status.states.downloading: "downloading",
    lt.torrent_status.states.finished: "finished",
    lt.torrent_status.states.seeding: "seeding",
    lt.torrent_status.states.checking_resume_data: "checking",
}

Finished = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class TorrentStatus:
    infohash: str
    name: str
    state: str
    progress: float
    done: int
    size: int
    download_rate: int
    upload_rate: int
    peers: int
    seeds: int
    uploaded: int
    error: str | None

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


def session_settings(cfg: TorrentSection) -> dict[str, Any]:
    host = cfg.listen_host
    interface = f"[{host}]" if ":" in host else host
    return {
        "listen_interfaces": f"{interface}:{cfg.listen_port}",
        "enable_dht": cfg.dht,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "ssrf_mitigation": True,
        "allow_multiple_connections_per_ip": cfg.allow_lan,
        "upload_rate_limit": cfg.upload_rate_limit,
        "download_rate_limit": cfg.download_rate_limit,
        "connections_limit": cfg.connections_limit,
        "share_ratio_limit": cfg.seed_ratio_limit,
        "seed_time_limit": cfg.seed_time_limit_hours * 3600,
        "user_agent": "civitas/1",
        "peer_fingerprint": "-CV0100-",
        "alert_mask": (
            lt.alert_category.error | lt.alert_category.status | lt.alert_category.storage
        ),
        "announce_to_all_trackers": True,
        "announce_to_all_tiers": True,
    }


def _ip_filter(allow_lan: bool) -> lt.ip_filter:
    ip_filter = lt.ip_filter()
    if not allow_lan:
        for start, end in PRIVATE_RANGES:
            ip_filter.add_rule(start, end, 1)
    return ip_filter


class TorrentEngine:
    """One libtorrent session per node."""

    def __init__(self, cfg: TorrentSection, state_dir: Path) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.session: lt.session | None = None
        self.handles: dict[str, lt.torrent_handle] = {}
        self.on_finished: Finished | None = None
        self._wake = asyncio.Event()
        self._alert_pipe: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._resume_waiters: dict[str, asyncio.Future[bytes | None]] = {}
        self.errors: dict[str, str] = {}  # infohash -> libtorrent's last error, as it said it
        self._tasks: set[asyncio.Future[None]] = set()
        self._dispatch: dict[str, Callable[[Any], None]] = {
            "torrent_finished_alert": self._finished,
            "save_resume_data_alert": self._resume_saved,
            "save_resume_data_failed_alert": self._resume_failed,
            "torrent_error_alert": self._error,
            "file_error_alert": self._error,
            "listen_failed_alert": self._error,
            "tracker_error_alert": self._debug,
            "url_seed_alert": self._debug,
        }

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        settings: Any = session_settings(self.cfg)
        params = lt.session_params(settings)
        state = self.state_dir / "session.state"
        if state.exists():
            with contextlib.suppress(RuntimeError, ValueError):
                saved = lt.read_session_params(
                    state.read_bytes(), lt.save_state_flags_t.save_dht_state
                )
                params.dht_state = saved.dht_state
        self.session = lt.session(params)
        self.session.set_ip_filter(_ip_filter(self.cfg.allow_lan))
        if self.cfg.upload_rate_limit or self.cfg.download_rate_limit:
            # libtorrent exempts LAN peers from rate limits by default; an operator who sets
            # a limit means every peer (a LAN federation's too).
            classes = lt.ip_filter()
            everyone = 1 << lt.session.global_peer_class_id
            classes.add_rule("0.0.0.0", "255.255.255.255", everyone)  # noqa: S104 (a range)
            classes.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", everyone)
            self.session.set_peer_class_filter(classes)
        # libtorrent signals new alerts by writing a byte to a pipe (set_alert_fd), not by
        # calling Python from its own thread: such a callback needs the GIL, and a thread
        # holding the GIL while it destroys or pauses the session waits for libtorrent's
        # alert lock, which the notifying thread holds: both wait for ever.
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._alert_pipe = (read_fd, write_fd)
        self.session.set_alert_fd(write_fd)
        asyncio.get_running_loop().add_reader(read_fd, self._alerts_ready, read_fd)
        self._task = asyncio.create_task(self._pump(), name="torrent-alerts")
        log.info("torrent session started", extra={"port": self.listen_port})

    async def stop(self) -> None:
        if self.session is None:
            return
        await stop_tasks([self._task])
        params = self.session.session_state(lt.save_state_flags_t.save_dht_state)
        (self.state_dir / "session.state").write_bytes(lt.write_session_params_buf(params))
        self.session.pause()
        self.handles.clear()
        # Destroying a session blocks until libtorrent's threads end (its last tracker
        # announces included, which may be to this very node): done on a worker thread
        # so the event loop keeps answering, and not waited for past a bound.
        last_reference = [self.session]
        self.session = None
        closing = asyncio.ensure_future(asyncio.to_thread(last_reference.clear))
        del last_reference
        try:
            await asyncio.wait_for(asyncio.shield(closing), SESSION_CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.error(
                "the torrent session did not close in time; going on without it",
                extra={"s": SESSION_CLOSE_TIMEOUT_S},
            )
            return  # its threads may still write to the pipe: left open
        self._close_pipe()

    def _alerts_ready(self, read_fd: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(read_fd, 4096):
                pass
        self._wake.set()

    def _close_pipe(self) -> None:
        if self._alert_pipe is None:
            return
        read_fd, write_fd = self._alert_pipe
        self._alert_pipe = None
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            asyncio.get_running_loop().remove_reader(read_fd)
        os.close(read_fd)
        os.close(write_fd)

    @property
    def listen_port(self) -> int:
        assert self.session is not None
        return int(self.session.listen_port())

    # --- alerts ---------------------------------------------------------------------

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.session is None:
                return
            for alert in self.session.pop_alerts():
                handler = self._dispatch.get(type(alert).__name__)
                if handler is not None:
                    try:
                        handler(alert)
                    except Exception:  # a bad alert handler must not stop the pump
                        log.exception("alert handler failed", extra={"alert": alert.what()})

    def _infohash(self, alert: Any) -> str:
        return str(alert.handle.info_hashes().v1)

    def _finished(self, alert: Any) -> None:
        infohash = self._infohash(alert)
        if self.on_finished is not None and infohash in self.handles:
            task = asyncio.ensure_future(self.on_finished(infohash))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _resume_saved(self, alert: Any) -> None:
        waiter = self._resume_waiters.pop(self._infohash(alert), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(bytes(lt.write_resume_data_buf(alert.params)))

    def _resume_failed(self, alert: Any) -> None:
        waiter = self._resume_waiters.pop(self._infohash(alert), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _error(self, alert: Any) -> None:
        """libtorrent pauses a torrent whose file cannot be written (a full disk); its
        message is kept, so the download's state can say so."""
        log.warning("torrent error", extra={"alert": alert.message()})
        handle = getattr(alert, "handle", None)
        if handle is not None and handle.is_valid():
            infohash = self._infohash(alert)
            if infohash in self.handles:
                self.errors[infohash] = str(alert.message())

    def _debug(self, alert: Any) -> None:
        log.debug("torrent", extra={"alert": alert.message()})

    # --- torrents -------------------------------------------------------------------

    def _params(
        self, meta: TorrentMeta, trackers: Sequence[str], web_seeds: Sequence[str]
    ) -> lt.add_torrent_params:
        params = lt.add_torrent_params()
        torrent: Any = {b"info": lt.bdecode(meta.info)}
        params.ti = lt.torrent_info(lt.bencode(torrent))
        params.trackers = list(trackers)
        params.url_seeds = list(web_seeds)
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        if not self.cfg.dht:
            params.flags |= lt.torrent_flags.disable_dht
        return params

    def seed(
        self,
        meta: TorrentMeta,
        path: Path,
        trackers: Sequence[str] = (),
        web_seeds: Sequence[str] = (),
    ) -> None:
        """Seed a verified local file where it lies, without re-reading it."""
        assert self.session is not None
        if meta.infohash in self.handles:
            return
        params = self._params(meta, trackers, web_seeds)
        params.save_path = str(path.parent)
        params.renamed_files = {0: path.name}
        params.flags |= lt.torrent_flags.seed_mode  # pieces were hashed at ingest
        self.handles[meta.infohash] = self.session.add_torrent(params)

    def download(
        self,
        meta: TorrentMeta,
        directory: Path,
        *,
        trackers: Sequence[str] = (),
        web_seeds: Sequence[str] = (),
        peers: Sequence[tuple[str, int]] = (),
        resume: bytes | None = None,
    ) -> None:
        """Fetch into ``directory/<name>``, resuming from saved resume data if given."""
        assert self.session is not None
        if meta.infohash in self.handles:
            return
        params = self._params(meta, trackers, web_seeds)
        if resume:
            with contextlib.suppress(RuntimeError, ValueError):
                saved = lt.read_resume_data(resume)
                params.have_pieces = saved.have_pieces
                params.verified_pieces = saved.verified_pieces
                params.unfinished_pieces = saved.unfinished_pieces
        params.save_path = str(directory)
        handle = self.session.add_torrent(params)
        for host, port in peers:
            with contextlib.suppress(RuntimeError, ValueError):
                handle.connect_peer((host, port))
        self.handles[meta.infohash] = handle

    def retry(self, infohash: str) -> None:
        """Clear a torrent's error and resume it (space was freed)."""
        handle = self.handles.get(infohash)
        self.errors.pop(infohash, None)
        if handle is not None:
            handle.clear_error()
            # a full disk puts a torrent in upload mode (not an error state): leave it
            handle.unset_flags(lt.torrent_flags.upload_mode)
            handle.resume()
            with contextlib.suppress(RuntimeError):
                handle.force_reannounce()  # its peers were dropped while it was paused

    def remove(self, infohash: str) -> None:
        self.errors.pop(infohash, None)
        handle = self.handles.pop(infohash, None)
        if handle is not None and self.session is not None:
            self.session.remove_torrent(handle)

    def connect(self, infohash: str, host: str, port: int) -> None:
        handle = self.handles.get(infohash)
        if handle is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                handle.connect_peer((str(ipaddress.ip_address(host)), port))

    async def resume_data(self, infohash: str) -> bytes | None:
        handle = self.handles.get(infohash)
        if handle is None:
            return None
        waiter: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._resume_waiters[infohash] = waiter
        handle.save_resume_data(lt.save_resume_flags_t.save_info_dict)
        try:
            return await asyncio.wait_for(waiter, timeout=10)
        except TimeoutError:
            self._resume_waiters.pop(infohash, None)
            return None

    def status(self, infohash: str) -> TorrentStatus | None:
        handle = self.handles.get(infohash)
        if handle is None:
            return None
        s = handle.status()
        error = self.errors.get(infohash) or (s.errc.message() if s.errc.value() else None)
        state = "error" if error else STATES.get(s.state, "unknown")
        if s.flags & lt.torrent_flags.paused and not error:
            state = "paused"
        return TorrentStatus(
            infohash=infohash,
            name=s.name,
            state=state,
            progress=round(float(s.progress), 4),
            done=int(s.total_wanted_done),
            size=int(s.total_wanted),
            download_rate=int(s.download_payload_rate),
            upload_rate=int(s.upload_payload_rate),
            peers=int(s.num_peers),
            seeds=int(s.num_seeds),
            uploaded=int(s.total_payload_upload),
            error=error,
        )

    def all_status(self) -> list[TorrentStatus]:
        return [s for h in list(self.handles) if (s := self.status(h)) is not None]
