"""The table the harness prints, the machine it ran on, and the JSON it writes."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.procs import REPO

OTHERS_LIMIT_CORES = 0.2
METHODS = (
    "ack: time from POSTing a signed event to the gateway's HTTP response, as the sender sees it (open loop).",
    "added: event sent -> the Slack write after which the whole answer shows (chat.stopStream, or the last "
    "chat.update/postMessage), minus the Assistants emulator's backend_s for that run.",
    "CPU: utime+stime of the gateway process (/proc/<pid>/stat) over the phase / answered messages.",
    "round trips: a TCP proxy between gateway and Redis counts request/response exchanges (a pipeline or "
    "MULTI block sent in one write is one); commands sent are counted there, commands executed "
    "(Lua scripts' inner calls included) come from INFO commandstats.",
    "RSS: gateway VmRSS growth after creating N one-message conversations (after a warm-up), per conversation.",
    "throughput: open-loop steps of rising rate (each on an idle gateway): the last rate before ack p99 passes "
    "100 ms, and the last at which every message was also answered with added p99 <= 1 s.",
)


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
    return {"cores": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "python": platform.python_version(), "memory_gb": _memory_gb()}


def _memory_gb() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return None
    kb = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
    return round(kb / 2**20, 1)


def commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip()

    return {"sha": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain", "--", "core",
                                                                             "bots", "switchboard"))}


def _triple(spread: dict[str, Any] | None) -> str:
    if not spread or spread.get("p50") is None:
        return "-"
    return f"{spread['p50']:.1f} / {spread['p99']:.1f} / {spread['max']:.1f}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISS")


def _le(value: Any, limit: float) -> bool | None:
    return None if value is None else bool(value <= limit)


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, measured, target, verdict) for every phase that ran."""
    out: list[tuple[str, str, str, str]] = []
    ack, conc = results.get("ack"), results.get("concurrent")
    if ack:
        p99 = ack["ack_ms"]["p99"]
        out.append((f"ack latency p50/p99/max, {ack['rate']:g} events/s (ms)", _triple(ack["ack_ms"]),
                    "p99 <= 20", _verdict(_le(p99, 20))))
    if conc:
        added = conc["added_ms"]
        ok = None if added["p50"] is None else added["p50"] <= 10 and added["p99"] <= 50
        out.append((f"added latency p50/p99/max, {conc['conversations']} conversations (ms)", _triple(added),
                    "p50 <= 10, p99 <= 50", _verdict(ok)))
    load = conc or ack
    if load:
        where = "concurrent" if conc else "ack"
        out.append((f"gateway CPU per message ({where}) (ms)", f"{load['gateway_cpu_ms_per_msg']:.2f}", "<= 3",
                    _verdict(_le(load["gateway_cpu_ms_per_msg"], 3))))
        trips = load.get("redis_round_trips_per_msg")
        out.append((f"Redis round trips per message ({where})", "-" if trips is None else f"{trips:.2f}", "<= 6",
                    _verdict(_le(trips, 6))))
        sent = load.get("redis_commands_sent_per_msg")
        executed = load["redis_commands_executed_per_msg"]
        out.append((f"Redis commands per message, sent / executed ({where})",
                    f"{'-' if sent is None else f'{sent:.1f}'} / {executed:.1f}", "", ""))
    if mem := results.get("memory"):
        out.append((f"gateway RSS per idle conversation, N={mem['conversations']} (KB)",
                    f"{mem['gateway_rss_kb_per_conversation']:.2f}", "<= 20",
                    _verdict(_le(mem["gateway_rss_kb_per_conversation"], 20))))
        out.append(("Redis memory per idle conversation (KB)", f"{mem['redis_kb_per_conversation']:.2f}", "", ""))
    if tp := results.get("throughput"):
        more = "" if tp["ack_limit_reached"] else ">= "
        out.append(("throughput before ack p99 passes 100 ms (msg/s)", f"{more}{tp['ack_limited']:g}", "", ""))
        out.append(("throughput with answers keeping up, added p99 <= 1 s (msg/s)", f"{tp['answers_keep_up']:g}",
                    "", ""))
    return out


def table(results: dict[str, Any]) -> str:
    lines = rows(results)
    header = ("metric", "measured", "target", "")
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*header).rstrip(), rule, *(fmt.format(*r).rstrip() for r in lines)])


def render(document: dict[str, Any], path: Path | None) -> str:
    m, settings = document["machine"], document["settings"]
    sha = document["commit"]["sha"][:12] + (" (+ uncommitted changes)" if document["commit"]["dirty"] else "")
    head = [
        f"Switchboard benchmark ({settings['mode']}) — {m['cores']} cores, {m['cpu'] or 'unknown CPU'}, "
        f"Python {m['python']}, Redis {document['redis_version']}; commit {sha}",
        f"backend: Assistants emulator, latency {settings['latency_s']:g} s, {settings['chunks']} chunks per answer; "
        f"Redis via {'the counting proxy' if not settings['direct_redis'] else 'a direct connection'}",
        "",
    ]
    notes = ["", *(f"- {line}" for line in METHODS)]
    notes += _load_notes(document["results"])
    for key, who in (("harness_cpu_utilization", "the harness (Slack emulator + sender)"),
                     ("emulator_cpu_utilization", "the Assistants emulator (its own process)")):
        used = [r.get(key) for r in document["results"].values() if isinstance(r, dict)]
        busy = max((u for u in used if u is not None), default=None)
        if busy is not None:
            notes.append(f"- {who} used up to {busy:.0%} of a core; near 100% it would be the bottleneck.")
    if path is not None:
        notes.append(f"- every number: {path}")
    return "\n".join([*head, table(document["results"]), *notes])


def _load_notes(results: dict[str, Any]) -> list[str]:
    """A warning per phase (throughput step) that other processes on the machine disturbed."""
    loads: list[tuple[str, float]] = []
    for name, result in results.items():
        if not isinstance(result, dict):
            continue
        if result.get("other_processes_cores") is not None:
            loads.append((name, result["other_processes_cores"]))
        loads += [(f"throughput {s['rate']:g}/s", s["other_processes_cores"]) for s in result.get("steps", [])]
    busy = [f"{name} {cores:.2f}" for name, cores in loads if cores > OTHERS_LIMIT_CORES]
    if busy:
        return [f"- other processes used more than {OTHERS_LIMIT_CORES} cores during: {', '.join(busy)} "
                "(cores); those numbers are disturbed: run again on a quiet machine."]
    top = max((cores for _, cores in loads), default=0.0)
    return [f"- other processes on this machine used at most {top:.2f} cores during any phase."]


def write_json(document: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path
