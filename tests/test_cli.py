"""The ``civitas`` command, run the way a user runs it: the installed console script.

Every command runs in a subprocess with its own home (``civitas --home H ...``) and an
environment cleared of ``CIVITAS_*`` variables except those a test sets. Servers listen
on 127.0.0.1, port 0; their address is read from ``HOME/node.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

from node.cli import main as cli_main
from node.config import all_settings
from node.p2p.keys import SigningKey, save_key

CIVITAS = Path(sys.executable).parent / "civitas"
PASSWORD = "correct horse battery"
DID_RE = re.compile(r"did:key:z[1-9A-HJ-NP-Za-km-z]+")
START_DEADLINE_S = 15.0
STOP_DEADLINE_S = 10.0
FAIL_DEADLINE_S = 20.0

# No proxy, whatever the environment says: every request here goes to 127.0.0.1.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --- helpers -----------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment without any CIVITAS_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIVITAS_")}
    env.update(  # BitTorrent on loopback, any free port, no DHT
        CIVITAS_TORRENT_LISTEN_HOST="127.0.0.1",
        CIVITAS_TORRENT_LISTEN_PORT="0",
        CIVITAS_TORRENT_DHT="false",
        CIVITAS_TORRENT_ALLOW_LAN="true",
    )
    env.update(extra)
    return env


def civitas(
    home: Path,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run ``civitas --home HOME ARGS...`` to completion."""
    return subprocess.run(
        [str(CIVITAS), "--home", str(home), *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env if env is not None else cli_env(),
        timeout=timeout,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a command succeeded; return its standard output."""
    assert result.returncode == 0, (
        f"{shlex.join(result.args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """Assert a command failed cleanly (non-zero, a message, no traceback); return stderr."""
    assert result.returncode != 0, (
        f"{shlex.join(result.args)} succeeded but should have failed\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip(), "a failing command must say why on stderr"
    return result.stderr


def http_post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST a JSON document with no credentials; (status, decoded body)."""
    assert url.startswith("http://127.0.0.1:"), url
    request = urllib.request.Request(  # noqa: S310 (http to 127.0.0.1)
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with _HTTP.open(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def http_get(url: str, token: str | None = None) -> tuple[int, Any]:
    """GET a JSON document; (status, decoded body)."""
    assert url.startswith("http://127.0.0.1:"), url
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (http to 127.0.0.1)
    try:
        with _HTTP.open(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def copy_home(src: Path, dst: Path) -> Path:
    """A copy of an initialised (stopped) home; modes are kept."""
    shutil.copytree(src, dst)
    return dst


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def add_user(home: Path, name: str, *flags: str, password: str = PASSWORD) -> str:
    """``civitas user add NAME --password-stdin``; the new user's did."""
    out = ok(civitas(home, "user", "add", name, *flags, "--password-stdin", stdin=password + "\n"))
    assert name in out
    match = DID_RE.search(out)
    assert match, f"`user add` printed no did: {out!r}"
    return match.group(0)


def user_lines(home: Path) -> dict[str, tuple[str, str]]:
    """``civitas user list`` as {name: (role, did)}."""
    out = ok(civitas(home, "user", "list"))
    users: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        name, role, did = line.split("\t")
        users[name] = (role, did)
    return users


@dataclass
class Server:
    home: Path
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    @property
    def runtime_file(self) -> Path:
        return self.home / "node.json"

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self) -> None:
        """Poll HOME/node.json until it names this process; fail with the server's stderr."""
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"`civitas serve` exited {self.proc.returncode} before serving:\n"
                    f"{self.stderr()}"
                )
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(self.runtime_file.read_text(encoding="utf-8"))
                if info.get("pid") == self.proc.pid and info.get("url"):
                    self.url = info["url"]
                    assert self.url.startswith("http://127.0.0.1:"), self.url
                    return
            time.sleep(0.05)
        pytest.fail(
            f"`civitas serve` wrote no {self.runtime_file} within {START_DEADLINE_S} s:\n"
            f"{self.stderr()}"
        )

    def stop(self) -> int:
        """SIGTERM; the exit status, which must come within STOP_DEADLINE_S."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"`civitas serve` ignored SIGTERM for {STOP_DEADLINE_S} s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def serving(home: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A running ``civitas serve`` on 127.0.0.1, any free port; always ended afterwards."""
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [str(CIVITAS), "--home", str(home), "serve", "--host", "127.0.0.1", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env if env is not None else cli_env(),
        )
    server = Server(home, proc, log)
    try:
        server.wait_ready()
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_DEADLINE_S)
        server.kill()


def serve_expecting_failure(
    home: Path, *args: str, port: int = 0, env: dict[str, str] | None = None
) -> str:
    """``civitas serve`` that must refuse to start, promptly; its stderr."""
    try:
        result = civitas(
            home,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
            env=env,
            timeout=FAIL_DEADLINE_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`civitas serve` was still running after {FAIL_DEADLINE_S} s: {exc.stderr!r}")
    err = refused(result)
    assert not (home / "node.json").exists(), "a node that failed to start left node.json"
    return err


# --- fixtures ----------------------------------------------------------------------------


@dataclass
class InitialisedHome:
    path: Path
    did: str
    init_output: str


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> InitialisedHome:
    """One `civitas init`-ed home, never served or changed: copy it to change it."""
    path = tmp_path_factory.mktemp("shared") / "home"
    out = ok(civitas(path, "init", "--name", "cli-test", "--host", "127.0.0.1", "--port", "0"))
    match = DID_RE.search(out)
    assert match, f"`civitas init` printed no did: {out!r}"
    return InitialisedHome(path, match.group(0), out)


@pytest.fixture
def home(initialised: InitialisedHome, tmp_path: Path) -> Path:
    """A private, stopped copy of the initialised home."""
    return copy_home(initialised.path, tmp_path / "home")


@pytest.fixture(scope="module")
def served(
    initialised: InitialisedHome, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One node serving its own copy of the initialised home for the whole module."""
    base = tmp_path_factory.mktemp("served")
    path = copy_home(initialised.path, base / "home")
    with serving(path, base / "serve.err") as server:
        yield server


# --- help --------------------------------------------------------------------------------

COMMANDS = [
    (),
    ("init",),
    ("serve",),
    ("migrate",),
    ("reindex",),
    ("status",),
    ("user", "add"),
    ("user", "list"),
    ("token", "create"),
    ("invite", "create"),
    ("invite", "list"),
    ("invite", "revoke"),
    ("keys", "export"),
    ("keys", "import"),
    ("keys", "rotate"),
    ("publish",),
    ("search",),
]


def _description(path: tuple[str, ...]) -> str:
    command: click.Command = cli_main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    first_paragraph = (command.help or "").strip().split("\n\n")[0]
    return " ".join(first_paragraph.split())


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "civitas")
def test_help_describes_every_command(path: tuple[str, ...], tmp_path: Path) -> None:
    description = _description(path)
    assert description, f"`civitas {' '.join(path)}` has no description"
    out = ok(civitas(tmp_path / "nohome", *path, "--help"))
    assert description in " ".join(out.split()), out
    assert out.startswith(f"Usage: civitas {' '.join(path)}".rstrip()), out
    assert not (tmp_path / "nohome").exists(), "--help must not create a home"


# --- init --------------------------------------------------------------------------------


def test_init_creates_config_key_and_admin_token(initialised: InitialisedHome) -> None:
    path = initialised.path
    config = tomllib.loads((path / "config.toml").read_text(encoding="utf-8"))
    written = {f"{section}.{key}" for section, values in config.items() for key in values}
    assert written == set(all_settings())
    assert config["node"]["name"] == "cli-test"
    assert config["server"]["port"] == 0
    assert config["server"]["host"] == "127.0.0.1"

    assert mode(path / "keys" / "node.key") == 0o600
    assert mode(path / "admin.token") == 0o600
    key = SigningKey.from_pem((path / "keys" / "node.key").read_bytes())
    assert key.did == initialised.did
    assert "civitas serve" in initialised.init_output


def test_init_twice_changes_nothing(home: Path) -> None:
    key_before = (home / "keys" / "node.key").read_bytes()
    config_before = (home / "config.toml").read_bytes()
    token_before = (home / "admin.token").read_bytes()

    out = ok(civitas(home, "init", "--name", "other", "--port", "0"))

    assert "already" in out and str(home.resolve()) in out
    assert (home / "keys" / "node.key").read_bytes() == key_before
    assert (home / "config.toml").read_bytes() == config_before
    assert (home / "admin.token").read_bytes() == token_before


# --- serve -------------------------------------------------------------------------------


def test_serve_answers_stops_on_sigterm_and_restarts_as_the_same_node(
    initialised: InitialisedHome, home: Path, tmp_path: Path
) -> None:
    with serving(home, tmp_path / "first.err") as server:
        status, info = http_get(server.url + "/.well-known/civitas")
        assert status == 200
        assert info["did"] == initialised.did
        status, health = http_get(server.url + "/healthz")
        assert status == 200, health

        started = time.monotonic()
        assert server.stop() == 0, server.stderr()
        assert time.monotonic() - started < STOP_DEADLINE_S
        assert not server.runtime_file.exists(), "node.json must go when the node stops"
        assert "Traceback" not in server.stderr()

    with serving(home, tmp_path / "second.err") as server:
        status, info = http_get(server.url + "/.well-known/civitas")
        assert status == 200
        assert info["did"] == initialised.did
        assert server.stop() == 0, server.stderr()


def serve_expecting_failure_while_running(server: Server) -> str:
    try:
        result = civitas(
            server.home, "serve", "--host", "127.0.0.1", "--port", "0", timeout=FAIL_DEADLINE_S
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a second `civitas serve` on a served home kept running")
    return refused(result)


def test_second_serve_on_same_home_is_refused(served: Server) -> None:
    err = serve_expecting_failure_while_running(served)
    assert f"pid {served.proc.pid}" in err
    # The first node is untouched and still the one the home points at.
    assert served.proc.poll() is None
    assert json.loads(served.runtime_file.read_text(encoding="utf-8"))["pid"] == served.proc.pid
    status, _ = http_get(served.url + "/healthz")
    assert status == 200


# --- while the node runs -----------------------------------------------------------------


def test_users_and_tokens_go_through_the_running_node(served: Server) -> None:
    home = served.home
    did = add_user(home, "alice", "--admin")
    # It went through the running node's API (the node logs each request, logfmt here).
    assert any(
        "method=POST" in line and "path=/api/admin/users " in line and "status=201" in line
        for line in served.stderr().splitlines()
    ), served.stderr()

    # The running node knows alice.
    admin_token = (home / "admin.token").read_text(encoding="utf-8").strip()
    status, body = http_get(served.url + "/api/admin/users", admin_token)
    assert status == 200
    assert {"name": "alice", "role": "admin", "did": did}.items() <= next(
        u for u in body["users"] if u["name"] == "alice"
    ).items()

    token = ok(civitas(home, "token", "create", "alice")).strip()
    assert token.startswith("cvt_"), token
    status, me = http_get(served.url + "/api/auth/me", token)
    assert status == 200, me
    assert me["user"]["name"] == "alice"
    assert me["user"]["role"] == "admin"

    assert user_lines(home)["alice"] == ("admin", did)


def invite_lines(home: Path) -> dict[int, list[str]]:
    """``civitas invite list`` as {id: [made by, made, expires, use]}."""
    out = ok(civitas(home, "invite", "list"))
    return {int(line.split("\t")[0]): line.split("\t")[1:] for line in out.splitlines()}


def test_invites_go_through_the_running_node(served: Server) -> None:
    home = served.home
    result = civitas(home, "invite", "create")
    code = ok(result).strip()
    assert code.startswith("cvi_"), code
    assert "valid until" in result.stderr
    assert any(
        "method=POST" in line and "path=/api/admin/invites " in line and "status=201" in line
        for line in served.stderr().splitlines()
    ), served.stderr()
    made = [i for i, (by, *_rest) in invite_lines(home).items() if by == "node admin"]
    assert made, invite_lines(home)
    invite_id = max(made)
    assert invite_lines(home)[invite_id][-1] == "unused"

    assert f"revoked invite {invite_id}" in ok(civitas(home, "invite", "revoke", str(invite_id)))
    assert invite_id not in invite_lines(home)
    err = refused(civitas(home, "invite", "revoke", str(invite_id)))
    assert f"no invite {invite_id}" in err


def test_an_invite_made_offline_lets_one_person_sign_up(home: Path, tmp_path: Path) -> None:
    code = ok(civitas(home, "invite", "create")).strip()
    (invite_id, (by, _made, _expires, use)), *others = invite_lines(home).items()
    assert (by, use, others) == ("cli", "unused", [])
    env = cli_env(CIVITAS_ACCOUNTS_REGISTRATION="invite")
    with serving(home, tmp_path / "serve.err", env=env) as server:
        form = {"username": "carol", "password": PASSWORD, "invite": code}
        status, body = http_post(server.url + "/api/auth/signup", form)
        assert status == 201, body
        assert body["user"]["name"] == "carol"
        status, body = http_post(server.url + "/api/auth/signup", {**form, "username": "dave"})
        assert status == 403, body
        assert "invite" in body["message"]
    assert invite_lines(home)[invite_id][-1] == "used by carol"
    assert "carol" in user_lines(home)
    assert refused(civitas(home, "invite", "revoke", str(invite_id)))


@pytest.mark.parametrize("command", ["reindex", "migrate"])
def test_offline_commands_refuse_while_serving(served: Server, command: str) -> None:
    err = refused(civitas(served.home, command))
    assert "serving" in err
    assert f"pid {served.proc.pid}" in err
    assert served.proc.poll() is None


def test_status_prints_json_with_the_did(served: Server, initialised: InitialisedHome) -> None:
    info = json.loads(ok(civitas(served.home, "status")))
    assert info["did"] == initialised.did
    assert info["endpoints"]["base"] == served.url


# --- while no node runs ------------------------------------------------------------------


def test_user_add_and_list_without_a_node(home: Path) -> None:
    did = add_user(home, "bob")
    assert user_lines(home) == {"bob": ("member", did)}


def test_duplicate_user_is_refused(home: Path) -> None:
    did = add_user(home, "bob")
    err = refused(
        civitas(home, "user", "add", "bob", "--password-stdin", stdin="another password\n")
    )
    assert "bob" in err and "exists" in err
    assert user_lines(home) == {"bob": ("member", did)}


def test_too_short_password_is_refused(home: Path) -> None:
    err = refused(civitas(home, "user", "add", "bob", "--password-stdin", stdin="short\n"))
    assert "password" in err
    assert user_lines(home) == {}


def test_reindex_replays_the_record_log(home: Path) -> None:
    add_user(home, "bob")  # publishes bob's profile record
    out = ok(civitas(home, "reindex"))
    match = re.search(r"replayed (\d+) records", out)
    assert match, out
    assert int(match.group(1)) >= 1
    assert "bob" in user_lines(home)


# --- keys --------------------------------------------------------------------------------


def test_keys_export_node_prints_the_node_key(initialised: InitialisedHome) -> None:
    pem = ok(civitas(initialised.path, "keys", "export", "--node"))
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert SigningKey.from_pem(pem.encode()).did == initialised.did


def test_keys_export_user_to_a_private_file(home: Path, tmp_path: Path) -> None:
    did = add_user(home, "bob")
    out_file = tmp_path / "bob.pem"
    ok(civitas(home, "keys", "export", "--user", "bob", "--out", str(out_file)))
    assert mode(out_file) == 0o600
    assert SigningKey.from_pem(out_file.read_bytes()).did == did


def test_keys_import_gives_a_user_that_key(home: Path, tmp_path: Path) -> None:
    add_user(home, "bob")
    key = SigningKey.generate()
    key_file = tmp_path / "new.pem"
    save_key(key_file, key)

    out = ok(civitas(home, "keys", "import", str(key_file), "--user", "bob"))
    assert key.did in out
    assert user_lines(home)["bob"] == ("member", key.did)
    exported = ok(civitas(home, "keys", "export", "--user", "bob"))
    assert SigningKey.from_pem(exported.encode()).did == key.did


def test_keys_rotate_moves_a_user_to_the_committed_next_key(home: Path) -> None:
    add_user(home, "carol")
    old = user_lines(home)["carol"][1]
    committed = SigningKey.from_pem(
        (home / "keys" / "authors" / (old.removeprefix("did:key:") + ".next.key")).read_bytes()
    )
    out = ok(civitas(home, "keys", "rotate", "--user", "carol"))
    assert f"rotated carol to {committed.did}" in out
    assert user_lines(home)["carol"] == ("member", committed.did)
    assert "no user" in refused(civitas(home, "keys", "rotate", "--user", "nobody")).lower()


@pytest.mark.parametrize("flags", [(), ("--node", "--user", "bob")], ids=["neither", "both"])
def test_keys_export_needs_node_or_user(
    initialised: InitialisedHome, flags: tuple[str, ...]
) -> None:
    result = civitas(initialised.path, "keys", "export", *flags)
    err = refused(result)
    assert "--node" in err and "--user" in err
    assert "PRIVATE KEY" not in result.stdout


# --- bad inputs --------------------------------------------------------------------------


def test_serve_refuses_invalid_toml(home: Path) -> None:
    with open(home / "config.toml", "a", encoding="utf-8") as f:
        f.write("\n[server\nport = \n")
    err = serve_expecting_failure(home)
    assert "config.toml" in err and "TOML" in err


def test_serve_refuses_unknown_setting(home: Path) -> None:
    config = home / "config.toml"
    text = config.read_text(encoding="utf-8")
    assert "\nport = 0\n" in text
    config.write_text(text.replace("\nport = 0\n", "\nprot = 0\n"), encoding="utf-8")
    err = serve_expecting_failure(home)
    assert "server.prot" in err


def test_serve_refuses_ill_typed_setting(home: Path) -> None:
    config = home / "config.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("\nport = 0\n", '\nport = "abc"\n'), encoding="utf-8")
    err = serve_expecting_failure(home)
    assert "server.port" in err and "abc" in err


def test_serve_refuses_a_readable_node_key(home: Path) -> None:
    (home / "keys" / "node.key").chmod(0o644)
    err = serve_expecting_failure(home)
    assert "too open" in err
    assert "chmod 600" in err


def test_serve_reports_an_unreachable_database(home: Path) -> None:
    err = serve_expecting_failure(
        home, "--database-url", "postgresql+asyncpg://postgres@127.0.0.1:1/nope"
    )
    assert "database" in err


def test_serve_on_a_busy_port_says_so(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = serve_expecting_failure(home, port=port)
    assert str(port) in err
    assert "in use" in err


def test_serve_outside_a_home_says_how_to_create_one(tmp_path: Path) -> None:
    not_home = tmp_path / "empty"
    not_home.mkdir()
    err = serve_expecting_failure(not_home)
    assert "civitas" in err and "init" in err
    # The command it suggests must work as printed (run elsewhere, so it must name the home).
    suggested = re.search(r"`(civitas [^`]*)`", err)
    assert suggested, err
    argv = shlex.split(suggested.group(1))
    assert str(not_home.resolve()) in argv, suggested.group(1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [str(CIVITAS), *argv[1:]],
        cwd=elsewhere,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=30,
        check=False,
    )
    ok(result)
    assert (not_home / "config.toml").exists()


def test_bad_environment_variable_names_the_setting(home: Path) -> None:
    err = serve_expecting_failure(home, env=cli_env(CIVITAS_SERVER_PORT="notanint"))
    assert "server.port" in err and "notanint" in err


# --- catalog: publish and search ---------------------------------------------------------


def test_publish_and_search_through_the_running_node(served: Server, tmp_path: Path) -> None:
    from tests.catalog.conftest import lora_file, png_bytes

    add_user(served.home, "carol")
    lora = lora_file(tmp_path / "fox.safetensors", 11)
    preview = tmp_path / "preview.png"
    preview.write_bytes(png_bytes(4))
    description = tmp_path / "README.md"
    description.write_text("Foxes, in **watercolor**.", encoding="utf-8")
    out = ok(
        civitas(
            served.home,
            "publish",
            str(lora),
            "--user",
            "carol",
            "--name",
            "CLI fox",
            "--type",
            "LORA",
            "--base-model",
            "SD 1.5",
            "--version",
            "v1",
            "--description-file",
            str(description),
            "--tag",
            "fox",
            "--trigger-word",
            "clifox",
            "--license",
            "CreativeML OpenRAIL-M",
            "--allow-commercial-use",
            "Image,Rent",
            "--no-derivatives",
            "--image",
            str(preview),
        )
    )
    assert "published: model" in out and "CLI fox" in out
    again = ok(civitas(served.home, "publish", str(lora), "--user", "carol", "--name", "CLI fox"))
    assert "already published" in again

    found = ok(civitas(served.home, "search", "clifox"))
    assert "CLI fox" in found and "carol" in found
    assert "no models found" in ok(civitas(served.home, "search", "zebra", "--type", "VAE"))
    data = json.loads(ok(civitas(served.home, "search", "--creator", "carol", "--json")))
    (model,) = data["items"]
    assert model["allowCommercialUse"] == ["Image", "Rent"]
    assert model["allowDerivatives"] is False
    assert model["civitas"]["descriptionMarkdown"] == "Foxes, in **watercolor**."
    assert len(model["modelVersions"][0]["images"]) == 1


def test_publish_refuses_a_pickle_with_a_clear_message(served: Server, tmp_path: Path) -> None:
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"\x80\x04\x95" + b"\0" * 32)
    add_user(served.home, "dave")
    err = refused(civitas(served.home, "publish", str(ckpt), "--user", "dave", "--name", "x"))
    assert "safetensors" in err


def test_seed_a_folder_in_place_and_list_torrents(served: Server, tmp_path: Path) -> None:
    from tests.catalog.conftest import lora_file

    add_user(served.home, "erin")
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    first = lora_file(folder / "one.safetensors", 31)
    second = lora_file(folder / "sub" / "two.safetensors", 32)
    (folder / "notes.txt").write_text("not a model", encoding="utf-8")
    out = ok(civitas(served.home, "seed", str(folder), "--user", "erin"))
    assert out.count("seeding:") == 2
    assert "already seeding" in ok(civitas(served.home, "seed", str(folder), "--user", "erin"))
    # In place: the files stay where they are, and nothing was copied into the store.
    assert first.exists() and second.exists()
    stored = {p.name for p in (served.home / "files").glob("*/*/*")}
    import hashlib

    assert hashlib.sha256(first.read_bytes()).hexdigest().upper() not in stored
    listing = ok(civitas(served.home, "torrents"))
    assert "one.safetensors" in listing and "two.safetensors" in listing
    assert "seeding" in listing
    err = refused(
        civitas(served.home, "seed", str(tmp_path / "empty-dir-missing"), "--user", "erin")
    )
    assert "does not exist" in err or "no .safetensors" in err
