"""A sample tool endpoint for ``switchboard demo`` and the tests: ``POST /weather``.

It speaks the tool protocol of SPEC §7 from the endpoint's side: it checks the Standard Webhooks
signature (401 when missing, malformed or wrong), reads ``arguments.location`` and answers
``{"output": {"location", "temperature_c", "conditions"}}`` — made up, but the same for the same
place every time, so demos and tests are repeatable.
"""

from __future__ import annotations

import hashlib
import json
from types import TracebackType
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

_CONDITIONS = ("sunny", "partly cloudy", "overcast", "light rain", "showers", "windy", "foggy", "snow")


def fake_weather(location: str) -> dict[str, Any]:
    """Deterministic weather for ``location`` (case and surrounding spaces do not matter)."""
    digest = hashlib.sha256(location.strip().lower().encode()).digest()
    return {
        "location": location,
        "temperature_c": digest[0] % 46 - 10,
        "conditions": _CONDITIONS[digest[1] % len(_CONDITIONS)],
    }


class DemoToolServer:
    """An aiohttp server on loopback answering ``POST /weather``; ``received`` holds verified bodies."""

    def __init__(self, *, secret: str) -> None:
        self._webhook = Webhook(secret)
        self.received: list[dict[str, Any]] = []
        self.received_headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self._base = ""

    @property
    def url(self) -> str:
        """The ``/weather`` URL; only valid after ``start``."""
        if not self._base:
            raise RuntimeError("DemoToolServer is not started")
        return f"{self._base}/weather"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/weather", self._weather)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self._base = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._base = ""

    async def __aenter__(self) -> DemoToolServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _weather(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = dict(request.headers)
        try:
            self._webhook.verify(raw, headers, json_parse=False)
        except (WebhookVerificationError, ValueError):
            # A malformed signature header fails inside the library with a plain ValueError.
            return web.json_response({"error": "invalid webhook signature"}, status=401)
        try:
            body = json.loads(raw)
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        self.received.append(body)
        self.received_headers.append(headers)
        arguments = body.get("arguments") if isinstance(body, dict) else None
        location = arguments.get("location") if isinstance(arguments, dict) else None
        if not isinstance(location, str) or not location.strip():
            return web.json_response({"error": "arguments.location (a city name) is required"}, status=422)
        return web.json_response({"output": fake_weather(location)})
