"""HttpToolRunner against real local HTTP endpoints (aiohttp), through the real httpx2 client."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
import pytest
from aiohttp import web
from pydantic import SecretStr

from core.config import ToolConfig
from core.demo_tool import DemoToolServer, fake_weather
from core.errors import ConfigError
from core.metrics import REGISTRY
from core.models import ToolCall
from core.ports import ToolContext
from core.tools import UNKNOWN_TOOL_LABEL, HttpToolRunner
from core.tracing import parse_traceparent
from tests.conftest import free_port

SECRET = "whsec_" + base64.b64encode(b"switchboard-test-secret-32-bytes").decode()
TOKEN = "tok-very-secret-123456"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
CONTEXT = ToolContext(
    platform="slack", workspace="T0123", channel="C0456", user="U0789", conversation="slack:T0123:C0456:17.1",
    run_id="run_1", thread_id="thread_1", assistant_id="asst_1", traceparent=TRACEPARENT,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Endpoint:
    """A local HTTP server answering every POST with ``handler``; records what it received."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.base = ""

    def url(self, path: str = "/tool") -> str:
        return self.base + path

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((dict(request.headers), await request.read()))
        return await self.handler(request)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


Serve = Callable[[Handler], Awaitable[Endpoint]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    started: list[Endpoint] = []

    async def start(handler: Handler) -> Endpoint:
        endpoint = Endpoint(handler)
        await endpoint.start()
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        await endpoint.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(follow_redirects=False, trust_env=False) as client:
        yield client


def tool(url: str, **kwargs: Any) -> ToolConfig:
    return ToolConfig(url=url, **kwargs)


def call(name: str = "get_weather", arguments: str = '{"location": "Paris"}', call_id: str = "call_1") -> ToolCall:
    return ToolCall(call_id=call_id, name=name, arguments=arguments)


def count(tool_label: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("switchboard_tool_calls_total", {"tool": tool_label, "outcome": outcome})
    return value or 0.0


async def run_one(runner: HttpToolRunner, the_call: ToolCall, profile_tools: list[str] | None = None) -> Any:
    [output] = await runner.run_calls(
        profile_tools=profile_tools if profile_tools is not None else [the_call.name],
        calls=[the_call], context=CONTEXT,
    )
    assert output.call_id == the_call.call_id
    return output


def error_of(output: Any) -> str:
    assert output.ok is False
    message = json.loads(output.output)["error"]
    assert isinstance(message, str)
    return message


def json_answer(payload: Any, status: int = 200) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response(payload, status=status)
    return handler


# --- the happy path: signed, exact body, context and trace -----------------------------------------

async def test_signed_request_with_exact_body_headers_and_trace(http: httpx2.AsyncClient) -> None:
    async with DemoToolServer(secret=SECRET) as demo:
        runner = HttpToolRunner(
            tools={"get_weather": tool(demo.url, secret=SecretStr(SECRET),
                                       headers={"Authorization": SecretStr(f"Bearer {TOKEN}")})},
            http=http,
        )
        before = count("get_weather", "ok")
        output = await run_one(runner, call(arguments='{"location": "Paris", "url": "http://elsewhere/"}'))

        assert output.ok is True
        assert json.loads(output.output) == fake_weather("Paris")
        assert demo.received == [{
            "tool": "get_weather", "call_id": "call_1",
            "arguments": {"location": "Paris", "url": "http://elsewhere/"},
            "run_id": "run_1", "thread_id": "thread_1", "assistant_id": "asst_1",
            "context": {"platform": "slack", "workspace": "T0123", "channel": "C0456",
                        "user": "U0789", "conversation": "slack:T0123:C0456:17.1"},
        }]
        headers = {k.lower(): v for k, v in demo.received_headers[0].items()}
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"].startswith("switchboard/")
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["webhook-id"] == "call_1"
        assert abs(int(headers["webhook-timestamp"]) - time.time()) < 5
        child = parse_traceparent(headers["traceparent"])
        assert child is not None
        assert (child.trace_id, child.flags) == (TRACE_ID, "01")
        assert headers["traceparent"] != TRACEPARENT
        assert count("get_weather", "ok") == before + 1


async def test_wrong_secret_is_refused_by_the_endpoint(http: httpx2.AsyncClient) -> None:
    other = "whsec_" + base64.b64encode(b"another-secret-another-secret!!!").decode()
    async with DemoToolServer(secret=SECRET) as demo:
        signed_wrong = HttpToolRunner(tools={"get_weather": tool(demo.url, secret=SecretStr(other))}, http=http)
        unsigned = HttpToolRunner(tools={"get_weather": tool(demo.url)}, http=http)
        assert "HTTP 401" in error_of(await run_one(signed_wrong, call()))
        assert "HTTP 401" in error_of(await run_one(unsigned, call()))
        assert demo.received == []


async def test_demo_endpoint_treats_a_malformed_signature_as_401(http: httpx2.AsyncClient) -> None:
    async with DemoToolServer(secret=SECRET) as demo:
        headers = {"webhook-id": "x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "nocomma"}
        response = await http.post(demo.url, content=b"{}", headers=headers)
        assert response.status_code == 401


async def test_demo_endpoint_needs_a_location(http: httpx2.AsyncClient) -> None:
    async with DemoToolServer(secret=SECRET) as demo:
        runner = HttpToolRunner(tools={"get_weather": tool(demo.url, secret=SecretStr(SECRET))}, http=http)
        message = error_of(await run_one(runner, call(arguments='{"city": "Paris"}')))
        assert message.startswith("tool endpoint answered HTTP 422")
        assert "location" in message


# --- parallelism and order ---------------------------------------------------------------------------

async def test_calls_run_in_parallel_and_keep_their_order(serve: Serve, http: httpx2.AsyncClient) -> None:
    def slow(answer: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            await asyncio.sleep(0.5)
            return web.json_response({"output": answer})
        return handler

    a, b = await serve(slow("from a")), await serve(slow("from b"))
    runner = HttpToolRunner(tools={"a": tool(a.url()), "b": tool(b.url())}, http=http)
    started = time.perf_counter()
    outputs = await runner.run_calls(
        profile_tools=["a", "b"], calls=[call("b", "{}", "call_b"), call("a", "{}", "call_a")], context=CONTEXT,
    )
    assert time.perf_counter() - started < 0.9
    assert [(o.call_id, o.output, o.ok) for o in outputs] == [("call_b", "from b", True), ("call_a", "from a", True)]


async def test_no_calls_no_outputs(http: httpx2.AsyncClient) -> None:
    runner = HttpToolRunner(tools={}, http=http)
    assert await runner.run_calls(profile_tools=[], calls=[], context=CONTEXT) == []


# --- what a 2xx answer becomes -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"output": "plain text"}, "plain text"),
        ({"output": {"temp": 21, "city": "Zürich"}}, '{"temp": 21, "city": "Zürich"}'),
        ({"output": 42}, "42"),
        ({"result": "no output key"}, '{"result": "no output key"}'),
        ([1, "two"], '[1, "two"]'),
        ("a JSON string", '"a JSON string"'),
    ],
)
async def test_json_answers(serve: Serve, http: httpx2.AsyncClient, payload: Any, expected: str) -> None:
    endpoint = await serve(json_answer(payload))
    runner = HttpToolRunner(tools={"t": tool(endpoint.url())}, http=http)
    output = await run_one(runner, call("t", "{}"))
    assert (output.output, output.ok) == (expected, True)


async def test_text_answer_is_used_as_is(serve: Serve, http: httpx2.AsyncClient) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text="It is 21 °C and sunny.\n", content_type="text/plain")

    endpoint = await serve(handler)
    runner = HttpToolRunner(tools={"t": tool(endpoint.url())}, http=http)
    output = await run_one(runner, call("t", "{}"))
    assert (output.output, output.ok) == ("It is 21 °C and sunny.\n", True)


# --- failures become error outputs -------------------------------------------------------------

async def test_http_500_is_an_error_output_without_secrets(serve: Serve, http: httpx2.AsyncClient) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        echoed = request.headers.get("Authorization", "")
        return web.Response(status=500, text=f"Internal error\nwhile using {echoed} and {TOKEN}")

    endpoint = await serve(handler)
    runner = HttpToolRunner(
        tools={"t": tool(endpoint.url(), secret=SecretStr(SECRET),
                         headers={"Authorization": SecretStr(f"Bearer {TOKEN}")})},
        http=http,
    )
    before = count("t", "http_error")
    message = error_of(await run_one(runner, call("t", "{}")))
    assert message.startswith("tool endpoint answered HTTP 500: Internal error while using")
    assert TOKEN not in message
    assert "[redacted]" in message
    assert count("t", "http_error") == before + 1


async def test_hanging_endpoint_times_out(serve: Serve, http: httpx2.AsyncClient) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response(text="too late")

    endpoint = await serve(hang)
    runner = HttpToolRunner(tools={"t": tool(endpoint.url(), timeout_s=0.3)}, http=http)
    before = count("t", "timeout")
    started = time.perf_counter()
    message = error_of(await run_one(runner, call("t", "{}")))
    assert 0.25 < time.perf_counter() - started < 1.5
    assert "did not answer within 0.3 s" in message
    assert count("t", "timeout") == before + 1


async def test_timeout_covers_a_body_that_trickles_in(serve: Serve, http: httpx2.AsyncClient) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(50):
            await response.write(b" ")
            await asyncio.sleep(0.1)
        return response

    endpoint = await serve(trickle)
    runner = HttpToolRunner(tools={"t": tool(endpoint.url(), timeout_s=0.5)}, http=http)
    started = time.perf_counter()
    assert "did not answer within" in error_of(await run_one(runner, call("t", "{}")))
    assert time.perf_counter() - started < 1.5


async def test_oversized_streamed_body_stops_reading_at_the_cap(serve: Serve, http: httpx2.AsyncClient) -> None:
    chunk, chunks = b"x" * 16_384, 1000
    written: list[int] = []
    stopped = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(chunks):
                await response.write(chunk)
                written.append(len(chunk))
                await asyncio.sleep(0.01)
        finally:
            stopped.set()
        return response

    endpoint = await serve(endless)
    runner = HttpToolRunner(tools={"t": tool(endpoint.url(), max_response_bytes=20_000)}, http=http)
    before = count("t", "too_large")
    started = time.perf_counter()
    message = error_of(await run_one(runner, call("t", "{}")))
    assert time.perf_counter() - started < 2.0  # reading everything takes ≥ 10 s
    assert message == "tool endpoint answer is larger than 20000 bytes"
    assert count("t", "too_large") == before + 1
    await asyncio.wait_for(stopped.wait(), timeout=5)  # the server's writes fail once we hang up
    assert sum(written) < chunk.__len__() * chunks


async def test_declared_oversized_body_is_refused(serve: Serve, http: httpx2.AsyncClient) -> None:
    endpoint = await serve(json_answer({"output": "y" * 5000}))
    runner = HttpToolRunner(tools={"t": tool(endpoint.url(), max_response_bytes=1000)}, http=http)
    assert "larger than 1000 bytes" in error_of(await run_one(runner, call("t", "{}")))


async def test_redirect_to_another_host_is_not_followed(serve: Serve, http: httpx2.AsyncClient) -> None:
    elsewhere = await serve(json_answer({"output": "captured"}))

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect(elsewhere.url("/steal").replace("127.0.0.1", "localhost"))

    endpoint = await serve(redirect)
    runner = HttpToolRunner(tools={"t": tool(endpoint.url())}, http=http)
    before = count("t", "redirect")
    message = error_of(await run_one(runner, call("t", "{}")))
    assert "HTTP 307" in message and "not followed" in message
    assert len(endpoint.requests) == 1
    assert elsewhere.requests == []
    assert count("t", "redirect") == before + 1


async def test_connection_refused(http: httpx2.AsyncClient) -> None:
    runner = HttpToolRunner(tools={"t": tool(f"http://127.0.0.1:{free_port()}/tool", timeout_s=5)}, http=http)
    before = count("t", "connection_error")
    assert "could not be reached" in error_of(await run_one(runner, call("t", "{}")))
    assert count("t", "connection_error") == before + 1


# --- calls that never leave the gateway --------------------------------------------------------

async def test_unknown_function_sends_nothing(serve: Serve, http: httpx2.AsyncClient) -> None:
    endpoint = await serve(json_answer({"output": "should not be called"}))
    runner = HttpToolRunner(tools={"get_weather": tool(endpoint.url())}, http=http)
    before = count(UNKNOWN_TOOL_LABEL, "unknown_tool")
    message = error_of(await run_one(runner, call("launch_rockets"), profile_tools=["get_weather", "launch_rockets"]))
    assert "launch_rockets" in message
    assert endpoint.requests == []
    assert count(UNKNOWN_TOOL_LABEL, "unknown_tool") == before + 1


async def test_function_outside_the_profile_sends_nothing(serve: Serve, http: httpx2.AsyncClient) -> None:
    endpoint = await serve(json_answer({"output": "should not be called"}))
    runner = HttpToolRunner(tools={"get_weather": tool(endpoint.url())}, http=http)
    before = count("get_weather", "not_allowed")
    message = error_of(await run_one(runner, call("get_weather"), profile_tools=["other_tool"]))
    assert "not enabled" in message
    assert endpoint.requests == []
    assert count("get_weather", "not_allowed") == before + 1


@pytest.mark.parametrize("arguments", ['{"location": "Par', "", "[1, 2]", '"Paris"', "[" * 100_000])
async def test_invalid_arguments_send_nothing(serve: Serve, http: httpx2.AsyncClient, arguments: str) -> None:
    endpoint = await serve(json_answer({"output": "should not be called"}))
    runner = HttpToolRunner(tools={"t": tool(endpoint.url())}, http=http)
    before = count("t", "invalid_arguments")
    assert "arguments" in error_of(await run_one(runner, call("t", arguments)))
    assert endpoint.requests == []
    assert count("t", "invalid_arguments") == before + 1


async def test_one_failing_call_does_not_spoil_the_others(serve: Serve, http: httpx2.AsyncClient) -> None:
    endpoint = await serve(json_answer({"output": "fine"}))
    runner = HttpToolRunner(tools={"t": tool(endpoint.url())}, http=http)
    outputs = await runner.run_calls(
        profile_tools=["t"], calls=[call("t", "not json", "c1"), call("t", "{}", "c2"), call("x", "{}", "c3")],
        context=CONTEXT,
    )
    assert [(o.call_id, o.ok) for o in outputs] == [("c1", False), ("c2", True), ("c3", False)]
    assert outputs[1].output == "fine"


# --- the runner itself ------------------------------------------------------------------------

async def test_cancellation_propagates(serve: Serve, http: httpx2.AsyncClient) -> None:
    arrived = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(30)
        return web.Response()

    endpoint = await serve(hang)
    runner = HttpToolRunner(tools={"t": tool(endpoint.url(), timeout_s=10)}, http=http)
    task = asyncio.create_task(runner.run_calls(profile_tools=["t"], calls=[call("t", "{}")], context=CONTEXT))
    await asyncio.wait_for(arrived.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("secret", ["whsec_", "whsec_a"])
def test_unusable_secret_is_a_config_error(http: httpx2.AsyncClient, secret: str) -> None:
    with pytest.raises(ConfigError, match=r"tools\.t\.secret") as caught:
        HttpToolRunner(tools={"t": tool("http://127.0.0.1:9/", secret=SecretStr(secret))}, http=http)
    assert secret not in str(caught.value)


async def test_log_lines_carry_the_outcome_and_no_secrets(
    serve: Serve, http: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = await serve(json_answer({"output": TOKEN}, status=503))
    runner = HttpToolRunner(
        tools={"t": tool(endpoint.url(), secret=SecretStr(SECRET), headers={"X-Key": SecretStr(TOKEN)})},
        http=http,
    )
    with caplog.at_level(logging.DEBUG, logger="core.tools"):
        output = await run_one(runner, call("t", "{}"))
    assert TOKEN not in output.output
    [record] = [r for r in caplog.records if r.name == "core.tools"]
    assert (record.tool, record.call_id, record.outcome, record.status) == ("t", "call_1", "http_error", 503)  # type: ignore[attr-defined]
    assert isinstance(record.ms, int)  # type: ignore[attr-defined]
    assert TOKEN not in caplog.text and SECRET not in caplog.text
