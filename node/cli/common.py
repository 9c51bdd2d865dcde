"""Helpers shared by the ``civitas`` subcommands."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from node.config import Config, load_config
from node.errors import CivitasError, HomeError, outage_of
from node.home import Home

T = TypeVar("T")


def fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def handle_errors(fn: Callable[..., T]) -> Callable[..., T]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except CivitasError as exc:
            fail(exc.message)
            raise AssertionError("unreachable") from exc
        except Exception as exc:  # a full disk, a corrupt database …: one line, not a trace
            if (outage := outage_of(exc)) is None:
                raise
            fail(outage.message)
            raise AssertionError("unreachable") from exc

    return wrapper


def utc_time(ms: int) -> str:
    """A time in milliseconds since the epoch, as the CLI prints it."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


class Context:
    def __init__(self, home: Path) -> None:
        self.home = Home(home)

    def config(self, **overrides: Any) -> Config:
        pairs = {(k.split(".")[0], k.split(".")[1]): v for k, v in overrides.items()}
        return load_config(self.home.path, pairs)

    def require_stopped(self, what: str) -> None:
        info = self.home.running()
        if info is not None:
            raise HomeError(
                f"a node (pid {info.get('pid')}) is serving {self.home.path}; "
                f"stop it before you {what}"
            )


pass_ctx = click.make_pass_decorator(Context)


def with_node(ctx: Context, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(node)`` against the home's database, checked to be at the current schema."""
    from node.app import build_node, check_schema

    ctx.home.require()
    node = build_node(ctx.config(), ctx.home)

    async def go() -> T:
        try:
            await check_schema(node.db)
            return await work(node)
        finally:
            await node.db.close()

    return run(go())
