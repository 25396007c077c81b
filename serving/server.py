"""Running the gateway: in the foreground (``ragswap serve``) or in a background thread (tests, notebooks)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from ragswap import Settings
from serving.app import build_app

logger = logging.getLogger(__name__)


class InsecureBindError(ValueError):
    """Refusing to expose a gateway without API keys beyond loopback."""


class StartupFailedError(RuntimeError):
    """The gateway's startup failed; a lifespan hook that refuses to start says why in ``app.state.startup_error``."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            return False


def check_bind(settings: Settings) -> None:
    """No key configured → only loopback: an open gateway must not be reachable from the network."""
    server = settings.server
    if not server.api_keys and not server.admin_keys and not is_loopback(server.host):
        raise InsecureBindError(
            f"refusing to listen on {server.host} without API keys: set server.api_keys "
            "(RAGSWAP_SERVER__API_KEYS='[\"...\"]') or bind to 127.0.0.1"
        )


class GatewayServer(uvicorn.Server):
    """uvicorn's server; on shutdown it first awaits the app's ``state.before_shutdown`` hooks (e.g. the embedded
    evaluation worker handing its job back), while the gateway still accepts the requests those hooks make."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        app: Any = self.config.app
        for hook in list(getattr(getattr(app, "state", None), "before_shutdown", [])):
            try:
                await hook()
            except Exception:
                logger.exception("a shutdown hook failed")
        await super().shutdown(sockets)


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        build_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,  # keep ragswap's JSON logging
        access_log=False,  # serving.middleware logs each request once, structured
        timeout_graceful_shutdown=30,
    )


def serve(settings: Settings) -> None:
    """Run until interrupted (SIGINT/SIGTERM): starts embedded engines when ``engine.urls`` is empty.

    Raises:
        StartupFailedError: the application did not start (uvicorn logs why and exits).
    """
    check_bind(settings)
    config = uvicorn_config(settings)
    server = GatewayServer(config)
    try:
        server.run()
    except SystemExit:
        if server.started:
            raise
    if not server.started:
        reason = getattr(getattr(config.app, "state", None), "startup_error", None)
        raise StartupFailedError(reason or "the gateway did not start (the log above says why)")


class BackgroundGateway:
    """A gateway in a daemon thread of this process.

    Example:
        >>> gw = BackgroundGateway(settings); gw.start()
        >>> gw.url
        'http://127.0.0.1:8000'
        >>> gw.stop()
    """

    def __init__(self, settings: Settings) -> None:
        check_bind(settings)
        self.settings = settings
        self.config = uvicorn_config(settings)
        self.server = GatewayServer(self.config)
        self._thread = threading.Thread(target=self.server.run, name="ragswap-gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.settings.server.host}:{self.settings.server.port}"

    @property
    def app(self) -> object:
        return self.config.app

    def start(self, timeout: float = 120.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("gateway failed to start (see the log)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gateway did not start in time")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=60)
