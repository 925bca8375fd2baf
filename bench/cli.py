"""``python -m bench [--quick]``: start the system, run the phases, print the table, write the JSON."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import phases, profile, report
from bench.phases import FULL, QUICK, Plan
from bench.procs import REPO, ChildFailed, Profiler
from bench.system import System, SystemOptions, running_system

Phase = Callable[[System, Plan], Awaitable[dict[str, Any]]]
PHASES: dict[str, Phase] = {
    "trace": lambda system, _plan: phases.trace(system),
    "memory": phases.memory,  # early: later phases' peaks would hide the growth it measures
    "ack": phases.ack,
    "concurrent": phases.concurrent,
    "throughput": phases.throughput,
}
DEADLINE_S = {"quick": 90.0, "full": 900.0}
PLAN_FIELDS = [f.name for f in dataclasses.fields(Plan)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small phases (CI's smoke test; under a minute)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="directory for the JSON result")
    parser.add_argument("--latency-s", type=float, default=0.0, help="backend emulator latency per run segment")
    parser.add_argument("--chunks", type=int, default=8, help="streamed text deltas per answer")
    parser.add_argument("--direct-redis", action="store_true",
                        help="connect the gateway straight to Redis (no counting proxy, no round-trip counts)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)} (default: all, in that order)")
    parser.add_argument("--profile", type=Path, metavar="PATH",
                        help="py-spy the gateway in the concurrent phase: raw stacks to PATH, top entries to PATH.txt")
    parser.add_argument("--trace", action="store_true", help="also print the Redis exchanges of one message")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep the gateway's and Redis's logs in DIR")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help=f"change one field of the plan (e.g. concurrent_s=20); fields: {', '.join(PLAN_FIELDS)}")
    args = parser.parse_args(argv)
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    try:
        args.plan = adjusted(QUICK if args.quick else FULL, args.set)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def adjusted(plan: Plan, changes: list[str]) -> Plan:
    """``plan`` with ``FIELD=VALUE`` changes (numbers; ``rates`` as comma-separated numbers)."""
    updates: dict[str, Any] = {}
    for change in changes:
        name, _, value = change.partition("=")
        current = getattr(plan, name, None)
        if current is None or not value:
            raise ValueError(f"--set {change!r}: expected FIELD=VALUE with FIELD one of {', '.join(PLAN_FIELDS)}")
        if isinstance(current, tuple):
            updates[name] = tuple(float(v) for v in value.split(","))
        else:
            updates[name] = type(current)(float(value)) if isinstance(current, int) else float(value)
    return dataclasses.replace(plan, **updates)


async def run_phase(system: System, name: str, plan: Plan, profile_path: Path | None) -> dict[str, Any]:
    print(f"bench: {name} …", file=sys.stderr, flush=True)
    started = time.monotonic()
    # Each phase starts on an idle gateway: answers still owed from the last one would load it.
    backlog = await system.tracker.drain(plan.answer_timeout_s)
    if backlog:
        print(f"bench: {backlog} answers of earlier phases never came", file=sys.stderr, flush=True)
    profiler = None
    if profile_path is not None and name == "concurrent":
        profiler = await Profiler.attach(system.children, system.gateway.pid, profile_path)
    try:
        result = await PHASES[name](system, plan)
    finally:
        if profiler is not None:
            await profiler.stop()
    system.slack.forget()
    if backlog:
        result["backlog_before"] = backlog
    print(f"bench: {name} done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    mode = "quick" if args.quick else "full"
    plan: Plan = args.plan
    options = SystemOptions(latency_s=args.latency_s, chunks=args.chunks, direct_redis=args.direct_redis)
    results: dict[str, Any] = {}
    this = asyncio.current_task()
    assert this is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this.cancel)  # stop everything, as Ctrl-C does
    async with asyncio.timeout(DEADLINE_S[mode]):
        with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
            async with running_system(options, Path(tmp)) as system:
                try:
                    for name in args.phases.split(","):
                        results[name] = await run_phase(system, name, plan, args.profile)
                finally:
                    if args.logs is not None:
                        keep_logs(Path(tmp), args.logs)
                redis_version = system.redis_version
    document: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": report.commit(),
        "machine": report.machine(),
        "redis_version": redis_version,
        "settings": {"mode": mode, "latency_s": args.latency_s, "chunks": args.chunks,
                     "direct_redis": args.direct_redis, "plan": vars(plan),
                     "max_concurrent_runs": options.max_concurrent_runs},
        "methods": list(report.METHODS),
        "results": results,
    }
    if args.profile is not None and args.profile.exists():
        document["profile"] = profile.top_entries(args.profile)
        args.profile.with_suffix(".txt").write_text(profile.render(document["profile"]) + "\n")
    return document


def keep_logs(workdir: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for log in workdir.glob("*.log"):
        shutil.copyfile(log, target / log.name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        document = asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    except ChildFailed as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print("bench: the run took longer than its deadline and was stopped", file=sys.stderr)
        return 1
    path = report.write_json(document, args.out)
    print(report.render(document, path))
    if args.trace and "trace" in document["results"]:
        print(render_trace(document["results"]["trace"]))
    if "profile" in document:
        print(f"\n{profile.render(document['profile'], limit=15)}")
    return 0


def render_trace(traced: dict[str, Any]) -> str:
    lines = []
    for kind, data in traced.items():
        if not isinstance(data, dict) or "exchanges" not in data:
            continue
        lines.append(f"\nRedis exchanges of one message ({kind}; ack {data['ack_ms']} ms, "
                     f"answered {data['e2e_ms']} ms):")
        lines += [f"  {x['at_ms']:9.2f} ms  {x['ms']:7.3f} ms  {x['exchange']}" for x in data["exchanges"]]
    return "\n".join(lines)
