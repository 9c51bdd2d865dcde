"""SIGTERM with transfers in flight stops within server.shutdown_timeout_s (issue 14.3):
an upload still streaming in is answered 503 and its temp file removed, a download a
client stopped reading is closed, and the process exits in time. Real `civitas serve`
processes and raw sockets (a client that stops reading or writing mid-transfer)."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import struct
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from safetensors.numpy import save_file

from tests.test_cli import (
    add_user,
    civitas,
    cli_env,
    home,  # noqa: F401  (fixture)
    initialised,  # noqa: F401  (fixture)
    ok,
    serving,
)

LIMIT_S = 4


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    return socket.create_connection((parts.hostname, parts.port or 80), timeout=10)


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _upload_start(url: str, token: str, declared: int) -> socket.socket:
    """An upload of a `declared`-byte model: headers, the metadata part and the start of
    the file (a valid safetensors header), then nothing more."""
    header = json.dumps(
        {"w": {"dtype": "U8", "shape": [declared - 100], "data_offsets": [0, declared - 100]}}
    ).encode()
    header += b" " * (100 - 8 - len(header))
    boundary = "civitasfault"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n'
        "Content-Type: application/json\r\n\r\n"
        + json.dumps({"name": "Big", "base_model": "SD 1.5", "type": "Checkpoint"})
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="big.safetensors"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    sock = _connect(url)
    request = (
        f"POST /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + declared + 100}\r\n\r\n"
    ).encode()
    sock.sendall(request + head + struct.pack("<Q", len(header)) + header)
    sock.sendall(b"\0" * (4 * 1024 * 1024))  # then it stalls, mid-file
    return sock


def _publish_in_place(url: str, token: str, model: Path) -> None:
    body = {
        "path": str(model),
        "user": "alice",
        "name": "Wide",
        "type": "Checkpoint",
        "base_model": "SD 1.5",
        "in_place": True,
    }
    request = urllib.request.Request(  # noqa: S310 (http to 127.0.0.1)
        f"{url}/api/models/publish-path",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request) as resp:
        assert resp.status == 201


def test_sigterm_with_an_upload_and_a_download_in_flight_stops_in_time(
    home: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    add_user(home, "alice")
    token = ok(civitas(home, "token", "create", "alice")).strip()
    model = tmp_path / "models" / "wide.safetensors"
    model.parent.mkdir()
    save_file({"w": np.zeros(16 * 1024 * 1024, dtype=np.uint8)}, str(model))
    env = cli_env(CIVITAS_SERVER_SHUTDOWN_TIMEOUT_S=str(LIMIT_S))
    with serving(home, tmp_path / "serve.err", env=env) as server:
        _publish_in_place(server.url, (home / "admin.token").read_text().strip(), model)
        upload = _upload_start(server.url, token, 512 * 1024 * 1024)

        download = _connect(server.url)
        download.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        digest = hashlib.sha256(model.read_bytes()).hexdigest().upper()
        download.sendall(f"GET /webseed/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        download.recv(1024)  # its answer has begun; now this client reads nothing more
        time.sleep(0.5)  # the upload's body is being received by its handler

        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        answer = _read_all(upload, LIMIT_S + 2)
        server.proc.wait(timeout=LIMIT_S + 5)
        took = time.monotonic() - started
        upload.close()
        download.close()

    assert answer.startswith(b"HTTP/1.1 503"), answer[:300]
    assert b"shutting_down" in answer
    assert took <= LIMIT_S + 1, f"stopping took {took:.1f} s"
    assert server.proc.returncode == 0, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()
    assert not list((home / "files" / "tmp").glob("*")), "the upload left its temp file"
