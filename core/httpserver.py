"""The gateway's HTTP server (SPEC §6): health, readiness, metrics, and the adapters' routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.errors import StoreUnavailable
from core.metrics import REGISTRY
from core.store import Store

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[tuple[str, bool]]]


def platform_check(name: str, ready: Callable[[], bool]) -> ReadinessCheck:
    async def check() -> tuple[str, bool]:
        return name, ready()
    return check


READY_PING_TIMEOUT_S = 2.0


def redis_check(store: Store) -> ReadinessCheck:
    """Ready while Redis answers a ping quickly: a Redis that hangs is as unusable as one that is down."""
    async def check() -> tuple[str, bool]:
        try:
            async with asyncio.timeout(READY_PING_TIMEOUT_S):
                return "redis", await store.ping()
        except (StoreUnavailable, TimeoutError):
            return "redis", False
    return check


@dataclass
class HttpServer:
    host: str
    port: int
    checks: list[ReadinessCheck]
    routes: Iterable[web.RouteDef] = ()
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_routes(list(self.routes))
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        log.info("http server listening", extra={"event": "http_listening", "host": self.host, "port": self.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        results = dict([await check() for check in self.checks])
        ready = all(results.values())
        return web.json_response({"ready": ready, "checks": results}, status=200 if ready else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
