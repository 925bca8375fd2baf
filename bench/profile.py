"""Top entries of a py-spy profile (``--format raw``: one ``frame;frame;... count`` line per stack).

- ``self``: samples where the function was on top of the stack (where the CPU was);
- ``inclusive``: samples where it was anywhere on the stack (what it cost, callees included);
- ``by_library``: each sample charged to the third-party package our code called last on its way
  to the CPU (``openai`` for the SDK's own HTTP and parsing work too, ``redis`` for redis-py's
  socket writes), else to our own code (``core``, ``bots``), else to the part of the standard
  library it ran in (``asyncio (event loop)`` for the loop itself).

Frames are aggregated by function and file, line numbers dropped. Threads waiting for work
(an idle thread pool) are not CPU and are left out.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")
_SITE = re.compile(r"\((?:.*/)?(?:site-packages|lib/python3\.\d+)/")
_FILE = re.compile(r"\(([^()]*):\d+\)$")
OWN = frozenset({"core", "bots", "switchboard", "bench"})
_IDLE_LEAVES = ("_worker (concurrent/futures/thread.py)",)
_ENTRY = ("switchboard/__main__.py", "switchboard/cli.py")  # every stack starts there: not "our code" as such
_ROOT = frozenset({"runpy", "asyncio", "selectors", "threading", "concurrent"})


def frame_name(frame: str) -> str:
    """``send (/x/site-packages/redis/asyncio/client.py:612)`` -> ``send (redis/asyncio/client.py)``."""
    return _SITE.sub("(", _LINE.sub(")", frame.strip()))


def origin(frame: str) -> tuple[str, str]:
    """(kind, name): ("lib", "redis"), ("own", "core") or ("std", "asyncio") for a frame (py-spy
    names files relative to their ``sys.path`` entry, so the first path part is the top-level module)."""
    match = _FILE.search(frame.strip())
    path = _SITE.sub("(", f"({match.group(1)}").lstrip("(") if match else ""
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in OWN:
        return "own", top
    if not top or top.startswith("<") or top in sys.stdlib_module_names:
        return "std", top.strip("<>").split(" ")[0] or "?"
    return "lib", top


def charge(frames: list[str]) -> str:
    """What a sample's CPU time is charged to: the library our code called last on the way to it
    (the first library frame after our deepest own frame; a library's own dependencies count as
    that library), else our own code, else the library or stdlib part it ran in."""
    kinds = [origin(f) for f in frames]
    own = [i for i, (kind, _) in enumerate(kinds) if kind == "own" and not any(e in frames[i] for e in _ENTRY)]
    after = own[-1] + 1 if own else 0
    for kind, name in kinds[after:]:
        if kind == "lib":
            return name
    leaf_kind, leaf = kinds[-1]
    if own:
        return f"{kinds[own[-1]][1]} (own code)" if leaf_kind == "own" else f"{leaf} (called by own code)"
    return f"{leaf} (event loop)" if leaf in _ROOT else leaf


def top_entries(path: Path, *, limit: int = 25) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        raw = [f for f in stack.split(";") if f]
        frames = [frame_name(f) for f in raw]
        if not frames or frames[-1].startswith(_IDLE_LEAVES):
            continue
        count = int(count_text)
        total += count
        own[frames[-1]] += count
        libraries[charge(raw)] += count
        for name in set(frames):
            inclusive[name] += count

    def share(counter: Counter[str], n: int) -> list[dict[str, Any]]:
        return [{"function": name, "samples": k, "percent": round(100 * k / max(1, total), 1)}
                for name, k in counter.most_common(n)]

    return {"samples": total, "self": share(own, limit), "inclusive": share(inclusive, limit * 4),
            "by_library": share(libraries, limit)}


def render(summary: dict[str, Any], *, limit: int = 20) -> str:
    lines = [f"py-spy: {summary['samples']} samples of the gateway on CPU"]
    for kind in ("by_library", "self", "inclusive"):
        lines.append(f"\ntop {kind}:")
        shown = summary[kind][:limit * (3 if kind == "inclusive" else 1)]
        lines += [f"  {e['percent']:5.1f}%  {e['function']}" for e in shown]
    return "\n".join(lines)
