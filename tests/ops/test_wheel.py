"""An operator's install: the wheel, in a fresh virtualenv outside the checkout.

The wheel is built from a copy of the sources (the checkout gets no build/ folder), then
installed with ``--no-deps`` into a new virtualenv that borrows the test environment's
already-installed dependencies through a ``.pth`` line (no network, seconds). Nothing of
the checkout is importable there: the node must run from what the wheel carries alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import node
from tests.catalog.conftest import lora_file
from tests.ops.helpers import NodeProcess, clean_env, http

REPO = Path(__file__).resolve().parents[2]
PIP = (sys.executable, "-m", "pip", "-q", "--disable-pip-version-check")
SOURCES = ("node", "web", "pyproject.toml", "setup.py", "README.md")


def build_wheel(out: Path) -> Path:
    src = out / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(out / "dist"), str(src)],
        check=True,
        cwd=out,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = (out / "dist").glob("civitas-*.whl")
    return wheel


def fresh_venv(path: Path, wheel: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    subprocess.run(
        [*PIP, "--python", str(path / "bin" / "python"), "install", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    site = subprocess.run(
        [
            str(path / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The dependencies, borrowed: a plain path line (the test env's own .pth files, and so
    # its editable install of the checkout, are not processed from here).
    Path(site, "zz_borrowed_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return path / "bin" / "civitas"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(base)
    return wheel, fresh_venv(base / "venv", wheel)


def test_the_wheel_carries_templates_static_files_and_migrations(
    installed: tuple[Path, Path],
) -> None:
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("templates", "static"):
        expected = {
            f"node/web/{p.relative_to(REPO / 'web').as_posix()}"
            for p in (REPO / "web" / folder).rglob("*")
            if p.is_file()
        }
        assert expected and expected <= names, sorted(expected - names)
    migrations = {p.name for p in (REPO / "node" / "migrations" / "versions").glob("*.py")}
    assert {f"node/migrations/versions/{m}" for m in migrations} <= names
    assert "node/migrations/env.py" in names and "node/migrations/script.py.mako" in names
    assert wheel.name.startswith(f"civitas-{node.__version__}-")


def test_an_installed_wheel_runs_a_node_that_serves_pages_and_publishes(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    _, civitas = installed
    env = clean_env()
    where = subprocess.run(
        [str(civitas.parent / "python"), "-c", "import node; print(node.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(civitas.parent.parent)), where  # not the checkout's node/

    def run(*args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(civitas), "--home", str(tmp_path / "home"), *args],
            cwd=tmp_path,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert run("--version").strip() == f"civitas, version {node.__version__}"
    run("init", "--name", "from-a-wheel", "--host", "127.0.0.1", "--port", "0")
    run("user", "add", "alice", "--password-stdin", stdin="correct horse battery\n")
    model = lora_file(tmp_path / "fox.safetensors")
    with NodeProcess.start(civitas, tmp_path / "home", env=env, cwd=tmp_path) as served:
        status, page = http(served.url + "/")
        assert status == 200 and b"<title>" in page and b"Civitas" in page
        css = page.split(b'href="/static/app.css', 1)[1].split(b'"', 1)[0].decode()
        assert http(served.url + "/static/app.css" + css)[0] == 200
        out = run("publish", str(model), "--name", "Wheel fox", "--tag", "fox")
        assert "published: model" in out
        status, body = http(served.url + "/api/v1/models?query=fox")
        assert status == 200 and b"Wheel fox" in body
