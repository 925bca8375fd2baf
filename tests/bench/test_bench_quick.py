"""CI's smoke test of the benchmark harness: ``python -m bench --quick`` runs and prints its table.

No timing is asserted (CI machines vary); the numbers only have to exist.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
async def test_quick_bench_runs_and_prints_the_table(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPENAI_", "DISCORD_", "REDIS_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path), cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 100)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    table = out.decode()
    for row in ("ack latency", "added latency", "gateway CPU per message", "Redis round trips per message",
                "RSS per idle conversation", "throughput"):
        assert row in table, table

    [result] = list(tmp_path.glob("*.json"))  # noqa: ASYNC240 (the process is done; nothing else runs)
    document = json.loads(result.read_text())
    assert document["machine"]["cores"] >= 1
    assert len(document["commit"]["sha"]) == 40
    results = document["results"]
    assert results["ack"]["answered"] == results["ack"]["messages"] > 0
    assert results["concurrent"]["answered"] > 0
    assert results["concurrent"]["redis_round_trips_per_msg"] > 0
    assert results["concurrent"]["gateway_cpu_ms_per_msg"] > 0
    assert [x for x in results["trace"]["new"]["exchanges"] if "accept" in x["exchange"]]
