"""A counting TCP proxy in front of Redis: ``python -m bench.redisproxy --port P --upstream-port Q``.

Bytes are forwarded unchanged both ways; on the side the proxy parses the RESP stream of each
connection and counts

- **commands**: every command a client sent (``EVALSHA`` labelled with the script's name);
- **round trips**: request/response exchanges. An exchange starts with a command sent while the
  connection has no reply outstanding and ends when every reply it waits for has arrived, so a
  pipeline or a ``MULTI … EXEC`` block sent in one write is one round trip, as the client pays it.

It is driven over stdin, one command a line, and answers each with one JSON line on stdout:
``snap`` (the counters), ``trace on`` / ``trace off`` (record every exchange in order, for a
step-by-step breakdown), ``label <sha> <name>`` (name a Lua script). It exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.resp import RespError, command_head, value_end

CHUNK = 65_536


@dataclass
class Counts:
    round_trips: int = 0
    commands: int = 0
    by_command: Counter[str] = field(default_factory=Counter)
    by_exchange: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    unparsed_connections: int = 0
    trace: list[dict[str, Any]] | None = None

    def snapshot(self) -> dict[str, Any]:
        return {"round_trips": self.round_trips, "commands": self.commands, "by_command": dict(self.by_command),
                "by_exchange": dict(self.by_exchange), "connections": self.connections,
                "unparsed_connections": self.unparsed_connections, "trace": self.trace}


def compact(labels: list[str]) -> str:
    """``["EVALSHA renew", "EVALSHA renew"]`` -> ``"EVALSHA renew x2"``; runs of the same command collapse."""
    out: list[str] = []
    runs: list[int] = []
    for label in labels:
        if out and out[-1] == label:
            runs[-1] += 1
        else:
            out.append(label)
            runs.append(1)
    return " | ".join(f"{label} x{n}" if n > 1 else label for label, n in zip(out, runs, strict=True))


class _Link:
    """One client connection's counting state (the bytes themselves are forwarded as they come)."""

    def __init__(self, proxy: CountingProxy, link_id: int) -> None:
        self.proxy = proxy
        self.id = link_id
        self.outstanding = 0
        self.batch: list[str] = []
        self.started = 0.0
        self.requests = bytearray()
        self.replies = bytearray()
        self.broken = False

    def on_request(self, data: bytes) -> None:
        if self.broken:
            return
        self.requests += data
        pos = 0
        try:
            while (end := value_end(self.requests, pos)) >= 0:
                self._command(self.proxy.label(command_head(self.requests, pos, end)))
                pos = end
        except (RespError, ValueError, IndexError):
            self._break()
            return
        del self.requests[:pos]

    def on_reply(self, data: bytes) -> None:
        if self.broken:
            return
        self.replies += data
        pos = 0
        try:
            while (end := value_end(self.replies, pos)) >= 0:
                pos = end
                self._reply()
        except (RespError, ValueError, IndexError):
            self._break()
            return
        del self.replies[:pos]

    def _command(self, label: str) -> None:
        counts = self.proxy.counts
        if self.outstanding == 0:
            self.batch = []
            self.started = time.perf_counter()
        self.outstanding += 1
        self.batch.append(label)
        counts.commands += 1
        counts.by_command[label] += 1

    def _reply(self) -> None:
        self.outstanding -= 1
        if self.outstanding > 0:
            return
        self.outstanding = 0
        counts = self.proxy.counts
        counts.round_trips += 1
        exchange = compact(self.batch)
        counts.by_exchange[exchange] += 1
        if counts.trace is not None:
            counts.trace.append({"link": self.id, "at": round(self.started, 6),
                                 "ms": round((time.perf_counter() - self.started) * 1000, 3), "exchange": exchange})

    def _break(self) -> None:
        self.broken = True
        self.proxy.counts.unparsed_connections += 1
        self.requests.clear()
        self.replies.clear()


class CountingProxy:
    def __init__(self, *, upstream_port: int, labels: dict[str, str] | None = None) -> None:
        self.upstream_port = upstream_port
        self.labels = dict(labels or {})
        self.counts = Counts()
        self._tasks: set[asyncio.Task[None]] = set()

    def label(self, head: list[str]) -> str:
        name = head[0].upper() if head else "?"
        if name == "EVALSHA" and len(head) > 1:
            return f"EVALSHA {self.labels.get(head[1], head[1][:8])}"
        return name

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts.connections += 1
        link = _Link(self, self.counts.connections)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(reader, up_writer, link.on_request))
                group.create_task(self._pump(up_reader, writer, link.on_reply))
        except* (ConnectionError, OSError):
            pass  # either side hung up: the other is closed by _pump's finally
        finally:
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: Callable[[bytes], None]) -> None:
        try:
            while data := await reader.read(CHUNK):
                count(data)  # before forwarding: a request is counted before its reply can arrive
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def control(self, line: str) -> dict[str, Any]:
        words = line.split()
        if words == ["snap"]:
            return self.counts.snapshot()
        if words == ["trace", "on"]:
            self.counts.trace = []
            return {"ok": True}
        if words == ["trace", "off"]:
            self.counts.trace = None
            return {"ok": True}
        if len(words) == 3 and words[0] == "label":
            self.labels[words[1]] = words[2]
            return {"ok": True}
        return {"error": f"unknown command {line!r}"}


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def serve(port: int, upstream_port: int) -> None:
    """Proxy until stdin closes (the harness ended or died)."""
    proxy = CountingProxy(upstream_port=upstream_port)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", port)
    async with server:
        print(json.dumps({"ready": port}), flush=True)
        control = await _stdin_lines()
        while line := await control.readline():
            print(json.dumps(proxy.control(line.decode())), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redisproxy", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="loopback port to listen on")
    parser.add_argument("--upstream-port", type=int, required=True, help="Redis's loopback port")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.upstream_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
