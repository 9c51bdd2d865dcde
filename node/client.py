"""The CLI's client for a running node's HTTP API, authenticated with the home's admin token."""

from __future__ import annotations

from typing import Any

import aiohttp

from node.errors import CivitasError, HomeError
from node.home import Home

TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)


class RemoteError(CivitasError):
    """An error the node answered with; carries the node's own code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def read_answer(resp: aiohttp.ClientResponse) -> Any:
    """A node's JSON answer; its JSON error (or a bare status) as :class:`RemoteError`."""
    try:
        data = await resp.json(content_type=None)
    except ValueError:
        data = None
    if resp.status >= 400:
        if isinstance(data, dict) and "error" in data:
            raise RemoteError(resp.status, data["error"], data.get("message", ""))
        raise RemoteError(resp.status, "http_error", f"the node answered {resp.status}")
    return data


class NodeClient:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    @classmethod
    def for_home(cls, home: Home) -> NodeClient:
        home.require()
        info = home.running()
        if info is None or not info.get("url"):
            raise HomeError(f"no node is serving {home.path}; start it with `civitas serve`")
        return cls(info["url"], home.admin_token())

    async def request(self, method: str, path: str, json: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.request(method, self.base_url + path, json=json, headers=headers) as resp,
            ):
                return await read_answer(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HomeError(f"cannot reach the node at {self.base_url}: {exc}") from None

    async def get(self, path: str) -> Any:
        return await self.request("GET", path)

    async def post(self, path: str, json: Any = None) -> Any:
        return await self.request("POST", path, json=json if json is not None else {})

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)
