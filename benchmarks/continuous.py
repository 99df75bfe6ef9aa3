"""Continuous batching in the embedded engine, side by side in one run: `dept serve` as it is
(queued work joins a running decode between steps) against the same server with
`--continuous_batching false` (a batch runs to its end before anything else starts).

    python benchmarks/continuous.py            # about 5 min on 2 cores

Cells, per server, SmolLM2-135M fp32 on 127.0.0.1, 16 adapters (m=20, r=8, random weights):
  completions   8 closed-loop clients, staggered: client k starts k x 0.3 s late and asks for
                16 + 8k tokens (greedy, no stop), so requests arrive while others decode; tok/s
  classify      p50 of one client classifying alone (idle), then while 4 clients generate
                64 tokens each without pause (under load)
Targets: completions tok/s, continuous / static >= 2 at 8 clients; classify p50 under load
<= 2 x its idle p50. Writes benchmarks/results/continuous.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from serving import SENTENCES, make_adapters, start

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = 16
# Load shedding off in both (--max_queue_wait 0): this compares batching alone (overload.py measures shedding).
SERVERS = {"continuous (dept serve)": ["--max_queue_wait", "0"],
           "static batches": ["--continuous_batching", "false", "--max_queue_wait", "0"]}


async def staggered_completions(url: str, clients: int, seconds: float) -> dict:
    tokens, statuses, stop_at = 0, {}, time.perf_counter() + seconds

    async def client(k: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        await asyncio.sleep(0.3 * k)
        i = 0
        while time.perf_counter() < stop_at:
            body = {"model": f"a{(k + i) % ADAPTERS:02d}", "prompt": f"sentence: {SENTENCES[(k + i) % len(SENTENCES)]}",
                    "max_tokens": 16 + 8 * k, "temperature": 0, "stop": ["\n\n\n\n\n\n"]}
            response = await http.post("/v1/completions", json=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                tokens += response.json()["usage"]["completion_tokens"]
            i += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        await asyncio.gather(*(client(k, http) for k in range(clients)))
    wall = time.perf_counter() - started
    return {"clients": clients, "statuses": statuses, "tokens": tokens, "wall_s": round(wall, 1),
            "tokens_per_s": round(tokens / wall, 1)}


async def classify_latency(url: str, requests: int, generators: int) -> dict:
    """p50/p95 of `requests` sequential classifications while `generators` clients generate."""
    latencies: list[float] = []
    done = asyncio.Event()

    async def generate(k: int, http: httpx.AsyncClient) -> None:
        while not done.is_set():
            await http.post("/v1/completions", json={"model": f"a{k:02d}", "prompt": "sentence: a quiet triumph",
                                                     "max_tokens": 64, "temperature": 0, "stop": ["\n\n\n\n\n\n"]})

    async def classify(http: httpx.AsyncClient) -> None:
        await asyncio.sleep(1.0 if generators else 0.0)  # the generations are under way
        for i in range(requests):
            started = time.perf_counter()
            response = await http.post("/v1/classify", json={"model": f"a{i % ADAPTERS:02d}",
                                                             "input": {"sentence": SENTENCES[i % len(SENTENCES)]}})
            assert response.status_code == 200, response.text
            latencies.append((time.perf_counter() - started) * 1000)
        done.set()

    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        await asyncio.gather(classify(http), *(generate(k, http) for k in range(generators)))
    ordered = sorted(latencies)
    return {"generators": generators, "requests": requests, "p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1)}


def markdown(result: dict) -> str:
    lines = [f"# Continuous batching ({result['date']}, {result['machine']})", "",
             "`dept serve`, SmolLM2-135M fp32, 16 adapters, 127.0.0.1. See benchmarks/continuous.py.", "",
             "| server | completions tok/s (8 staggered clients) | statuses | classify p50 ms idle | "
             "classify p50 ms under 4 generating clients | p95 ms under load |", "| --- | --- | --- | --- | --- | --- |"]
    for name, cells in result["servers"].items():
        c, idle, busy = cells["completions"], cells["classify_idle"], cells["classify_under_load"]
        lines.append(f"| {name} | {c['tokens_per_s']} | {c['statuses']} | {idle['p50_ms']} | {busy['p50_ms']} | "
                     f"{busy['p95_ms']} |")
    lines += ["", "## Ratios (same run)", ""] + [f"- {k}: {v}" for k, v in result["ratios"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="seconds of completions traffic per server")
    parser.add_argument("--classify", type=int, default=40, help="classifications per latency cell")
    args = parser.parse_args()
    servers = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_adapters(folder, ADAPTERS)
        for name, extra in SERVERS.items():
            process, url = start(folder, extra)
            try:
                cells = {"completions": asyncio.run(staggered_completions(url, 8, args.seconds)),
                         "classify_idle": asyncio.run(classify_latency(url, args.classify, 0)),
                         "classify_under_load": asyncio.run(classify_latency(url, args.classify, 4))}
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
            servers[name] = cells
            print(name, json.dumps(cells), flush=True)
    ours, static = servers["continuous (dept serve)"], servers["static batches"]
    ratios = {
        "completions tok/s, 8 staggered clients: continuous / static (target >= 2)":
            round(ours["completions"]["tokens_per_s"] / static["completions"]["tokens_per_s"], 2),
        "classify p50 under generation load / idle, continuous (target <= 2)":
            round(ours["classify_under_load"]["p50_ms"] / ours["classify_idle"]["p50_ms"], 2),
        "classify p50 under generation load / idle, static":
            round(static["classify_under_load"]["p50_ms"] / static["classify_idle"]["p50_ms"], 2),
    }
    result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "servers": servers, "ratios": ratios}
    out = ROOT / "benchmarks" / "results"
    (out / "continuous.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "continuous.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
