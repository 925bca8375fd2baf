"""The harness's child processes (redis-server, the counting proxy, the gateway, py-spy) and /proc readings.

Every child is started in its own session (a Ctrl-C in the terminal reaches only the harness,
which then stops them in order) and asks the kernel to SIGTERM it if the harness dies. ``Children``
stops them all on exit, whatever happened; loopback addresses only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


class ChildFailed(RuntimeError):
    """A child process did not start (its log tail is in the message)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the harness dies, even by SIGKILL (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (from /proc, 1/CLK_TCK resolution)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ChildFailed(f"no VmRSS for pid {pid}")


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def log_tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self, *, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        """Ask the child to stop (``sig``), then kill it if it has not exited after ``timeout_s``."""
        if not self.running:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.kill()
            await self.proc.wait()

    def kill(self) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class Children:
    """Starts children and stops every one of them (last started first) when the block ends."""

    def __init__(self) -> None:
        self._children: list[Child] = []

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop_all())

    async def stop_all(self) -> None:
        for child in reversed(self._children):
            try:
                await child.stop()
            finally:
                child.kill()
        self._children.clear()

    def kill_all(self) -> None:
        """Synchronous last resort (the event loop is gone)."""
        for child in self._children:
            child.kill()

    async def start(self, name: str, argv: Sequence[str], *, log: Path | None = None, pipes: bool = False,
                    env: dict[str, str] | None = None) -> Child:
        """Start ``argv``; output goes to ``log`` (or nowhere); ``pipes`` gives it stdin/stdout pipes instead."""
        out: Any = asyncio.subprocess.DEVNULL
        log_file = None
        if log is not None:
            log_file = log.open("wb")
            out = log_file
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=REPO, env=env, start_new_session=True, preexec_fn=_die_with_parent,
                stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipes else out, stderr=out,
            )
        finally:
            if log_file is not None:
                log_file.close()  # the child has its own descriptor
        child = Child(name=name, proc=proc, log=log)
        self._children.append(child)
        return child


async def wait_for_port(child: Child, port: int, *, deadline_s: float = 15.0) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError as exc:
            if not child.running or time.monotonic() > end:
                raise ChildFailed(f"{child.name} is not listening on {port}\n{child.log_tail()}") from exc
            await asyncio.sleep(0.05)


async def wait_until_ready(child: Child, url: str, *, deadline_s: float = 60.0) -> None:
    """Poll ``url`` (the gateway's /readyz) until it answers 200."""
    end = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if not child.running or time.monotonic() > end:
                raise ChildFailed(f"{child.name} did not become ready at {url}\n{child.log_tail()}")
            await asyncio.sleep(0.1)


async def start_redis(children: Children, workdir: Path) -> tuple[Child, int]:
    """redis-server with AOF every second (as compose.yaml runs it), on a free loopback port."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
            "--appendfsync", "everysec", "--dir", str(workdir)]
    child = await children.start("redis-server", argv, log=workdir / "redis.log")
    await wait_for_port(child, port)
    return child, port


class ProxyControl:
    """The counting proxy (``bench.redisproxy``), asked over its stdin/stdout."""

    def __init__(self, child: Child, port: int) -> None:
        self.child = child
        self.port = port
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, children: Children, redis_port: int) -> ProxyControl:
        port = free_port()
        argv = [sys.executable, "-m", "bench.redisproxy", "--port", str(port), "--upstream-port", str(redis_port)]
        child = await children.start("redis-proxy", argv, pipes=True)
        control = cls(child, port)
        await asyncio.wait_for(control._line(), 15)  # {"ready": port}
        return control

    async def ask(self, command: str) -> dict[str, Any]:
        async with self._lock:
            stdin = self.child.proc.stdin
            assert stdin is not None
            stdin.write(command.encode() + b"\n")
            await stdin.drain()
            return await asyncio.wait_for(self._line(), 15)

    async def _line(self) -> dict[str, Any]:
        stdout = self.child.proc.stdout
        assert stdout is not None
        line = await stdout.readline()
        if not line:
            raise ChildFailed("the Redis proxy exited")
        result: dict[str, Any] = json.loads(line)
        return result


class Profiler:
    """``py-spy record`` attached to a running process; ``stop()`` makes it write its output."""

    def __init__(self, child: Child, out: Path) -> None:
        self.child = child
        self.out = out

    @classmethod
    async def attach(cls, children: Children, pid: int, out: Path, *, rate_hz: int = 200) -> Profiler:
        binary = Path(sys.executable).with_name("py-spy")
        if not binary.exists():
            raise ChildFailed(f"py-spy is not installed next to {sys.executable} (pip install py-spy)")
        argv = [str(binary), "record", "--pid", str(pid), "--rate", str(rate_hz), "--format", "raw",
                "--output", str(out)]
        child = await children.start("py-spy", argv, log=out.with_suffix(".log"))
        await asyncio.sleep(0.5)  # let it attach before the load starts
        if not child.running:
            raise ChildFailed(f"py-spy failed:\n{child.log_tail()}")
        return cls(child, out)

    async def stop(self) -> None:
        await self.child.stop(sig=signal.SIGINT, timeout_s=30)
