"""FastAPI dependency aliases: a handler's signature lists what it needs (settings, auth, long-lived services).

Example:
    >>> @router.post("/v1/things")
    ... async def create(body: ThingCreate, _: AdminDep, registry: RegistryDep) -> ThingPublic: ...
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ragswap import Settings
from serving.adapters.registry import AdapterRegistry
from serving.engine.pool import EnginePool
from serving.errors import ForbiddenError, UnauthorizedError
from serving.ops.metrics import GatewayMetrics
from serving.proxy import EngineProxy
from serving.settings import TokenLimits

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``key_hint`` is safe to log (never the key itself); ``limits`` bound its completions."""

    key_hint: str
    admin: bool
    limits: TokenLimits


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _matches(token: str, keys: list[str]) -> bool:
    # Compare against every key (no early exit), each in constant time.
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Bearer auth against ``server.api_keys`` + ``server.admin_keys``.

    With no key configured at all the gateway is in loopback-only development mode (``ragswap serve`` refuses
    other hosts then) and every caller is an admin.
    """
    server = get_settings(request).server
    api_keys = [k.get_secret_value() for k in server.api_keys]
    admin_keys = [k.get_secret_value() for k in server.admin_keys]
    if not api_keys and not admin_keys:
        return Principal(key_hint="anonymous", admin=True, limits=server.token_limits())
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise UnauthorizedError(
            "missing API key: send it as `Authorization: Bearer <key>`", code="missing_api_key"
        )
    token = credentials.credentials
    hint = f"…{token[-4:]}" if len(token) >= 8 else "…"
    if _matches(token, admin_keys):
        return Principal(key_hint=hint, admin=True, limits=server.token_limits(token))
    if _matches(token, api_keys):
        return Principal(key_hint=hint, admin=False, limits=server.token_limits(token))
    raise UnauthorizedError("invalid API key", code="invalid_api_key")


def require_admin(principal: Annotated[Principal, Depends(require_api_key)]) -> Principal:
    """Admin scope: needed to change adapters, aliases and collections."""
    if not principal.admin:
        raise ForbiddenError("this operation needs an admin key", code="admin_required")
    return principal


def get_registry(request: Request) -> AdapterRegistry:
    registry: AdapterRegistry = request.app.state.registry
    return registry


def get_pool(request: Request) -> EnginePool:
    pool: EnginePool = request.app.state.pool
    return pool


def get_metrics(request: Request) -> GatewayMetrics:
    metrics: GatewayMetrics = request.app.state.metrics
    return metrics


def get_proxy(request: Request) -> EngineProxy:
    proxy: EngineProxy = request.app.state.proxy
    return proxy


SettingsDep = Annotated[Settings, Depends(get_settings)]
ApiKeyDep = Annotated[Principal, Depends(require_api_key)]
AdminDep = Annotated[Principal, Depends(require_admin)]
RegistryDep = Annotated[AdapterRegistry, Depends(get_registry)]
PoolDep = Annotated[EnginePool, Depends(get_pool)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]
ProxyDep = Annotated[EngineProxy, Depends(get_proxy)]
