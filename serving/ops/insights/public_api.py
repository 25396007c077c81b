"""This gateway's public HTTP API, called in process as the caller.

The views compose the public JSON endpoints instead of reaching into the services behind them: whatever backs
``/v1/adapters`` or ``/v1/evaluations`` (files today, a SQL control plane tomorrow) the views read the same shapes,
with the same authorisation, as any client would. The call goes through the app's ASGI stack (auth, error
rendering, access log) without a socket; the caller's ``Authorization`` and ``X-Request-Id`` are forwarded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import Request

from serving.errors import GatewayError

_FORWARDED = ("authorization", "x-request-id")


class PublicApi:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """The JSON body of ``GET path``; an error response is raised again as the same :class:`GatewayError`."""
        resp = await self.client.get(path, params=params)
        if resp.status_code >= 400:
            raise _error_of(resp)
        return resp.json()


def _error_of(resp: httpx.Response) -> GatewayError:
    try:
        info = resp.json()["error"]
        return GatewayError(
            str(info["message"]),
            param=info.get("param"),
            code=info.get("code"),
            status_code=resp.status_code,
            type=str(info.get("type") or "server_error"),
        )
    except (ValueError, KeyError, TypeError):
        return GatewayError(
            f"{resp.request.url.path} answered {resp.status_code}", status_code=resp.status_code
        )


@asynccontextmanager
async def public_api(request: Request, timeout_s: float = 120.0) -> AsyncIterator[PublicApi]:
    """A client of ``request``'s app carrying the caller's credentials."""
    headers = {k: v for k in _FORWARDED if (v := request.headers.get(k))}
    transport = httpx.ASGITransport(app=request.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=headers, timeout=timeout_s
    ) as client:
        yield PublicApi(client)
