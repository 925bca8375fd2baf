"""``python -m core.emulator --port 8901``: run the Assistants API emulator until interrupted."""

from __future__ import annotations

import argparse
import asyncio

from core.emulator.assistants import AssistantsEmulator


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m core.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--chunks", type=int, default=8, help="text deltas per streamed answer")
    parser.add_argument("--latency-s", type=float, default=0.0, help="delay before each run's output")
    parser.add_argument("--expiry-s", type=float, default=600.0, help="how long runs wait for tool outputs")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    emulator = AssistantsEmulator(chunks=args.chunks, latency_s=args.latency_s, expiry_s=args.expiry_s)
    await emulator.start(args.host, args.port)
    try:
        print(f"Assistants API emulator listening: OPENAI_BASE_URL={emulator.base_url}", flush=True)
        await asyncio.Event().wait()
    finally:
        await emulator.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C; returns the process exit code."""
    try:
        asyncio.run(_serve(_parse_args(argv)))
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how this server is meant to stop
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
