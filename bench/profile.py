"""Top entries of a py-spy profile (``--format raw``: one ``frame;frame;... count`` line per stack).

``self``: samples where the function was on top of the stack (where the CPU was);
``inclusive``: samples where it was anywhere on the stack (what it cost, callees included).
Frames are aggregated by function and file, line numbers dropped.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")
_SITE = re.compile(r"\((?:.*/)?(?:site-packages|lib/python3\.\d+)/")


def frame_name(frame: str) -> str:
    """``send (/x/site-packages/redis/asyncio/client.py:612)`` -> ``send (redis/asyncio/client.py)``."""
    return _SITE.sub("(", _LINE.sub(")", frame.strip()))


def top_entries(path: Path, *, limit: int = 25) -> dict[str, Any]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f]
        total += count
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "samples": n, "percent": round(100 * n / max(1, total), 1)}
                for name, n in counter.most_common(limit)]

    return {"samples": total, "self": share(own), "inclusive": share(inclusive)}


def render(summary: dict[str, Any], *, limit: int = 20) -> str:
    lines = [f"py-spy: {summary['samples']} samples of the gateway on CPU"]
    for kind in ("self", "inclusive"):
        lines.append(f"\ntop {kind}:")
        lines += [f"  {e['percent']:5.1f}%  {e['function']}" for e in summary[kind][:limit]]
    return "\n".join(lines)
