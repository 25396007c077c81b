"""The gateway's handle on the control-plane database: opened once in the core lifespan, shared by the adapter
registry and the evaluation service, and its errors mapped onto the gateway's in one place.

A database that cannot be reached makes *changes* fail with 503 (nothing half-done); routing keeps working from
the registry snapshot the gateway holds in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from serving.errors import ConflictError, GatewayError, NotFoundError, ServiceUnavailableError

if TYPE_CHECKING:
    from controlplane import ControlPlane, ControlPlaneError
    from ragswap import Settings

P = ParamSpec("P")
T = TypeVar("T")


def open_control_plane(settings: Settings) -> ControlPlane:
    """Connect to ``server.database_url`` (default: SQLite in the state dir), migrate, import a legacy state dir.

    Blocking (run it in a thread). Raises the control plane's errors: the gateway must not start without it.
    """
    from controlplane import ControlPlane

    url = settings.server.database_url
    return ControlPlane.open(
        url.get_secret_value() if url is not None else None, state_dir=settings.server.state_dir
    )


def gateway_error(exc: ControlPlaneError) -> GatewayError:
    """The gateway error a control-plane error stands for (same message, ``param`` and ``code``)."""
    from controlplane import RecordConflictError, RecordNotFoundError

    if isinstance(exc, RecordNotFoundError):
        return NotFoundError(exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, RecordConflictError):
        return ConflictError(exc.message, param=exc.param, code=exc.code)
    return ServiceUnavailableError(exc.message, code=exc.code or "controlplane_unavailable")


async def db_call(plane: ControlPlane, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking control-plane call off the event loop; its failures become gateway errors (4xx/503)."""
    from controlplane import ControlPlaneError

    try:
        return await plane.call(fn, *args, **kwargs)
    except ControlPlaneError as exc:
        raise gateway_error(exc) from exc
