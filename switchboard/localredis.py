"""A throwaway local redis-server for ``switchboard demo`` (when REDIS_URL is unset)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

INSTALL_HINT = "redis-server is not on PATH: install it (Debian/Ubuntu: apt-get install redis-server; " \
               "macOS: brew install redis) or set REDIS_URL to a running Redis."


class RedisNotInstalled(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_for_port(port: int, deadline_s: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if loop.time() > end:
                raise
            await asyncio.sleep(0.05)


@asynccontextmanager
async def local_redis() -> AsyncIterator[str]:
    """Start redis-server on a free loopback port in a temp dir; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisNotInstalled(INSTALL_HINT)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="switchboard-redis-") as workdir:
        proc = await asyncio.create_subprocess_exec(
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await _wait_for_port(port, 10)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            await proc.wait()
