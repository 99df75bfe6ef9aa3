"""Overload: open-loop classify traffic at 2x and 4x the server's measured saturation, against a
queue bounded by count alone (`--max_queue_wait 0`) and by expected wait (`--max_queue_wait W`).

    python benchmarks/overload.py            # W=2 s, 30 s per rate; about 6 min on 2 cores
    python benchmarks/overload.py --seconds 60 --max_queue_wait 4
    python benchmarks/overload.py --engine vllm   # the same through --engine vllm (overload-vllm.*)

Per server: saturation is measured closed-loop (32 clients, 10 s), then requests are sent at fixed
intervals, each on its own, whatever the answers (open loop), for `--seconds` at 2x and at 4x that
rate. Every request is awaited (bounded: 120 s each). Reports statuses, the latency of admitted
requests (200) by arrival window and overall, unanswered requests, and whether `/metrics` equals
the client's counts. Target (expected-wait server): p99 of admitted <= 2 x W + one batch, zero
5xx, zero unanswered, /metrics equal. Server on 127.0.0.1, SmolLM2-135M fp32, 4 adapters.
Writes benchmarks/results/overload.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
from serving import SENTENCES, load, make_adapters, start

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = 4
WINDOW = 10.0
"""Seconds of arrivals per latency window."""


async def open_loop(url: str, rate: float, seconds: float) -> list[dict]:
    """One request every 1/rate s for `seconds`, none waiting for another: (arrival, latency, status)."""
    records: list[dict] = []

    async def one(i: int, http: httpx.AsyncClient, arrival: float) -> None:
        body = {"model": f"a{i % ADAPTERS:02d}", "input": {"sentence": SENTENCES[i % len(SENTENCES)]}}
        try:
            status = (await http.post("/v1/classify", json=body)).status_code
        except httpx.HTTPError:
            status = -1  # unanswered (timed out or the connection failed)
        records.append({"arrival": arrival, "latency": time.perf_counter() - start_at - arrival, "status": status})

    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start_at = time.perf_counter()
        tasks, i = [], 0
        while (due := i / rate) < seconds:
            await asyncio.sleep(max(0.0, due - (time.perf_counter() - start_at)))
            tasks.append(asyncio.create_task(one(i, http, due)))
            i += 1
        await asyncio.gather(*tasks)
    return records


def served_counts(url: str) -> dict[str, int]:
    """The server's own tally of classify answers by status (dept_requests_total)."""
    counts: dict[str, int] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        match = re.match(r'dept_requests_total\{(.*)\} ([0-9.e+]+)$', line)
        if match and 'endpoint="/v1/classify"' in match.group(1):
            status = re.search(r'status="(\d+)"', match.group(1)).group(1)
            counts[status] = counts.get(status, 0) + int(float(match.group(2)))
    return counts


def summarise(records: list[dict], rate: float) -> dict:
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    admitted = sorted(r["latency"] for r in records if r["status"] == 200)

    def q(xs, p):
        return round(xs[min(len(xs) - 1, int(p * len(xs)))], 2) if xs else None

    windows = {}
    for r in records:
        if r["status"] == 200:
            windows.setdefault(int(r["arrival"] // WINDOW), []).append(r["latency"])
    return {"rate_per_s": round(rate, 2), "sent": len(records), "statuses": statuses,
            "unanswered": statuses.get("-1", 0), "p50_s": q(admitted, 0.5), "p99_s": q(admitted, 0.99),
            "p50_by_window_s": {f"{int(k * WINDOW)}-{int((k + 1) * WINDOW)}": q(sorted(v), 0.5)
                                for k, v in sorted(windows.items())}}


def run_server(folder: Path, wait: float, seconds: float, engine: list[str]) -> dict:
    process, url = start(folder, ["--max_queue", "256", "--max_queue_wait", str(wait), *engine])
    try:
        saturation = asyncio.run(load(url, "classify", 32, ADAPTERS, 100_000, 10.0))["requests_per_s"]
        before = served_counts(url)
        cells = []
        for factor in (2, 4):
            records = asyncio.run(open_loop(url, factor * saturation, seconds))
            cell = summarise(records, factor * saturation)
            cell["factor"] = factor
            cells.append(cell)
        after = served_counts(url)
        served = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)}
        client: dict[str, int] = {}
        for cell in cells:
            for k, v in cell["statuses"].items():
                client[k] = client.get(k, 0) + v
        return {"max_queue_wait": wait, "saturation_per_s": saturation, "cells": cells,
                "metrics": served, "metrics_equal_client": served == client}
    finally:
        process.terminate()
        process.wait(60)


def markdown(result: dict) -> str:
    lines = [f"# Overload, {result.get('engine', 'embedded')} engine ({result['date']}, {result['machine']})", "",
             "Open-loop classify traffic at 2x and 4x the measured saturation, "
             f"{result['seconds']:g} s per rate; latency of admitted (200) requests.", "",
             "| --max_queue_wait | saturation req/s | load | sent | statuses | unanswered | p50 s | p99 s | "
             "p50 by arrival window (s) | target p99 | met | /metrics = client |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for server in result["servers"]:
        for c in server["cells"]:
            target = server.get("target_p99_s")
            met = "" if target is None else ("yes" if c["p99_s"] is not None and c["p99_s"] <= target
                                             and not c["unanswered"]
                                             and not any(k.startswith("5") for k in c["statuses"]) else "no")
            lines.append(f"| {server['max_queue_wait']:g} | {server['saturation_per_s']} | {c['factor']}x "
                         f"({c['rate_per_s']}/s) | {c['sent']} | {c['statuses']} | {c['unanswered']} | {c['p50_s']} | "
                         f"{c['p99_s']} | {c['p50_by_window_s']} | {target if target is not None else 'none'} | "
                         f"{met} | {server['metrics_equal_client']} |")
    lines += ["", "Target: p99 of admitted <= 2 x max_queue_wait + one batch (one batch = 16 rows / saturation)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of traffic per rate")
    parser.add_argument("--max_queue_wait", type=float, default=2.0, help="the expected-wait bound tried")
    parser.add_argument("--engine", default="embedded", choices=("embedded", "vllm"))
    args = parser.parse_args()
    engine = [] if args.engine == "embedded" else ["--engine", "vllm", "--engine_args",
                                                   json.dumps({"max_model_len": 512})]
    servers = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_adapters(folder, ADAPTERS)
        for wait in (0.0, args.max_queue_wait):
            server = run_server(folder, wait, args.seconds, engine)
            if wait > 0:
                server["target_p99_s"] = round(2 * wait + 16 / server["saturation_per_s"], 2)
            servers.append(server)
            print(json.dumps(server, indent=1), flush=True)
    result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
              "seconds": args.seconds, "engine": args.engine, "servers": servers}
    out, name = ROOT / "benchmarks" / "results", "overload" if args.engine == "embedded" else "overload-vllm"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
