"""Serving throughput and latency of `dept serve` on the packaged SmolLM2-135M, server as a
subprocess on 127.0.0.1, closed-loop async clients, every cell bounded in requests and seconds.

    python benchmarks/serving.py --quick   # classify at concurrency 1/8/32, 1 and 16 adapters; completions
                                           # (16 tokens) at 8; overload; about 10 min on 2 cores
    python benchmarks/serving.py --full    # + concurrency 64, 4 adapters, completions at 1/8/32/64
    python benchmarks/serving.py --engines # the embedded engine against --engine vllm (where vLLM is
                                           # installed): completions (32 tokens) at 1/8/32 clients with
                                           # 1 and 16 adapters, classify at 8/32, and the base model
                                           # through vLLM as plain text (the floor); about 25 min

Side by side in one run, the same adapters and traffic: mixed-adapter batching (ours), the same
server batching only same-adapter requests (--mix_adapters false), and no batching
(--max_batch_size 1), and a PEFT baseline (benchmarks/_peft_server.py: PEFT prompt-tuning adapters,
set_adapter per request, as a user would write it). The adapters are DePT adapters (m=20, r=8, s=64) with random weights:
throughput does not depend on what they learned. Writes benchmarks/results/serving-<mode>.json
and .md and docs/img/serving_<mode>.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["a gorgeous, witty film", "dull and far too long", "i laughed the whole way through",
             "not worth the ticket", "a quiet triumph of acting", "the plot made no sense at all"]
SERVERS = {"mixed (ours)": [], "same-adapter batches": ["--mix_adapters", "false"],
           "unbatched": ["--max_batch_size", "1"], "PEFT, set_adapter per request": None}
MODES = {
    "quick": dict(classify=[(1, 1), (8, 1), (32, 1), (1, 16), (8, 16), (32, 16)], complete=[(8, 16)],
                  requests=64, seconds=15.0),
    "full": dict(classify=[(c, a) for a in (1, 4, 16) for c in (1, 8, 32, 64)],
                 complete=[(c, a) for a in (1, 16) for c in (1, 8, 32, 64)], requests=256, seconds=60.0),
    "engines": dict(classify=[(8, 16), (32, 16)], complete=[(c, a) for a in (1, 16) for c in (1, 8, 32)],
                    floor=[1, 8, 32], requests=1024, seconds=45.0, max_tokens=32),
}
FLOOR = "complete, base model as plain text"
"""The same prompts with no adapter: the vLLM engine sends them as token ids, its floor."""


def make_adapters(folder: Path, count: int) -> None:
    import torch

    from dept import DeptConfig, DeptModel

    torch.manual_seed(0)
    model = DeptModel.from_pretrained("smollm2-135m")
    for i in range(count):
        name = f"a{i:02d}"
        model.add_adapter(name, DeptConfig(prompt_length=20, rank=8, max_length=64, prompt_init="random", seed=i,
                                           task={"task": "sst2"}))
        with torch.no_grad():
            model.dept_adapters[name].lora_b.normal_(0, 0.01)
        model.save_adapter(folder / name, name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path, extra: list[str] | None) -> tuple[subprocess.Popen, str]:
    """`dept serve` with `extra` flags, or (None) the PEFT baseline, on a free loopback port."""
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # GiB; vLLM's CPU build otherwise takes most of the memory
    command = ([sys.executable, str(Path(__file__).with_name("_peft_server.py")), str(port), "16"] if extra is None
               else [sys.executable, "-m", "dept.cli.main", "serve", "--adapters_dir", str(folder), "--port",
                     str(port), "--max_queue", "64", *extra])
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600  # vLLM compiles the model first (about 150 s here)
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not start")


async def load(url: str, kind: str, concurrency: int, adapters: int, requests: int, seconds: float,
               max_tokens: int = 16) -> dict:
    """Closed loop: `concurrency` clients, each sending its next request when the last returns,
    until `requests` have been sent or `seconds` have passed. `adapters` 0: the base model."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    tokens = 0
    sent = 0
    stop_at = time.perf_counter() + seconds

    async def client(k: int, http: httpx.AsyncClient) -> None:
        nonlocal sent, tokens
        while sent < requests and time.perf_counter() < stop_at:
            i = sent
            sent += 1
            adapter = f"a{i % adapters:02d}" if adapters else base
            text = SENTENCES[i % len(SENTENCES)]
            if kind == "classify":
                path, body = "/v1/classify", {"model": adapter, "input": {"sentence": text}}
            else:
                path, body = "/v1/completions", {"model": adapter, "prompt": f"sentence: {text}", "max_tokens": max_tokens,
                                                 "temperature": 0, "stop": ["\n\n\n\n"]}
            started = time.perf_counter()
            try:
                response = await http.post(path, json=body)
                status = response.status_code
                if status == 200 and kind != "classify":
                    tokens += response.json()["usage"]["completion_tokens"]
            except httpx.HTTPError:
                status = -1
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=concurrency)) as http:
        base = (await http.get("/v1/models")).json()["data"][0]["id"]
        await asyncio.gather(*(client(k, http) for k in range(concurrency)))
    wall = time.perf_counter() - started
    ok = sorted(lat for lat in latencies)
    q = (lambda p: ok[min(len(ok) - 1, int(p * len(ok)))] * 1000) if ok else (lambda p: None)
    return {"kind": kind, "concurrency": concurrency, "adapters": adapters, "requests": len(latencies),
            "statuses": statuses, "wall_s": round(wall, 2), "requests_per_s": round(statuses.get(200, 0) / wall, 2),
            "tokens_per_s": round(tokens / wall, 2), "p50_ms": q(0.5), "p95_ms": q(0.95), "p99_ms": q(0.99)}


def report(results: dict) -> str:
    lines = [f"# Serving benchmark ({results['mode']})", "", f"{results['machine']}; {results['date']}; "
             f"wall {results['wall_s']} s. Server: `dept serve` on 127.0.0.1, SmolLM2-135M, "
             f"{results.get('setting', 'float32, CPU')}. "
             f"Adapters 0: the base model alone.", "",
             "| server | kind | concurrency | adapters | requests | req/s | tok/s | p50 ms | p95 ms | p99 ms | statuses |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for server, cells in results["cells"].items():
        for c in cells:
            lines.append(f"| {server} | {c['kind']} | {c['concurrency']} | {c['adapters']} | {c['requests']} | "
                         f"{c['requests_per_s']} | {c['tokens_per_s']} | {c['p50_ms'] or 0:.0f} | {c['p95_ms'] or 0:.0f} | "
                         f"{c['p99_ms'] or 0:.0f} | {c['statuses']} |")
    lines += ["", "## Ratios (same run)", ""] + [f"- {k}: {v}" for k, v in results["ratios"].items()]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Throughput and median latency against concurrency, classification with 16 adapters, per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rps, ax_lat) = plt.subplots(1, 2, figsize=(10, 3.8))
    for server, cells in results["cells"].items():
        rows = sorted((c["concurrency"], c["requests_per_s"], c["p50_ms"]) for c in cells
                      if c["kind"] == "classify" and c["adapters"] == 16)
        if rows:
            ax_rps.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", label=server)
            ax_lat.plot([r[0] for r in rows], [r[2] for r in rows], marker="o", label=server)
    ax_rps.set(xlabel="concurrent clients", ylabel="requests/s", title="Classification throughput, 16 adapters")
    ax_lat.set(xlabel="concurrent clients", ylabel="p50 latency (ms)", title="Median latency", yscale="log")
    for ax in (ax_rps, ax_lat):
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
    ax_rps.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ratios(cells: dict) -> dict:
    def rps(server, kind, c, a):
        found = [x for x in cells.get(server, []) if (x["kind"], x["concurrency"], x["adapters"]) == (kind, c, a)]
        return found[0]["requests_per_s"] if found else None

    out = {}
    for c in (8, 32):
        one, many = rps("mixed (ours)", "classify", c, 1), rps("mixed (ours)", "classify", c, 16)
        if one and many:
            out[f"classify, concurrency {c}: 16 adapters / 1 adapter (target >= 0.9)"] = round(many / one, 2)
        peft = rps("PEFT, set_adapter per request", "classify", c, 16)
        ours, flat = rps("mixed (ours)", "classify", c, 16), rps("unbatched", "classify", c, 16)
        # Two effects apart: dept's per-request code path (both servers one request at a time) and
        # batching across adapters (dept against itself); their product is ours / PEFT.
        if flat and peft:
            out[f"classify, concurrency {c}, 16 adapters: code path, unbatched / PEFT set_adapter"] = round(flat / peft, 2)
        if ours and flat:
            out[f"classify, concurrency {c}, 16 adapters: batching, ours / unbatched (target >= 4 at 32)"] = \
                round(ours / flat, 2)
        if ours and peft:
            out[f"classify, concurrency {c}, 16 adapters: both, ours / PEFT set_adapter"] = round(ours / peft, 2)
        same = rps("same-adapter batches", "classify", c, 16)
        if ours and same:
            out[f"classify, concurrency {c}, 16 adapters: ours / same-adapter batches"] = round(ours / same, 2)
    return out | engine_ratios(cells)


def engine_ratios(cells: dict) -> dict:
    """--engines: the vLLM engine against its plain-text floor and the embedded engine, completions
    tok/s, and 16 adapters against 1 in each engine."""
    def tps(server, kind, c, a):
        found = [x for x in cells.get(server, []) if (x["kind"], x["concurrency"], x["adapters"]) == (kind, c, a)]
        return found[0]["tokens_per_s"] if found else None

    out = {}
    vllm, floor = tps("vllm engine", "complete", 32, 16), tps("vllm engine", FLOOR, 32, 0)
    if vllm and floor:
        out["completions, 32 clients: vLLM engine with 16 adapters / plain-text floor (target >= 0.75)"] = \
            round(vllm / floor, 2)
    for c in (8, 32):
        ours, theirs = tps("embedded engine", "complete", c, 16), tps("vllm engine", "complete", c, 16)
        if ours and theirs:
            out[f"completions, {c} clients, 16 adapters: vLLM engine / embedded engine (target >= 3)"] = \
                round(theirs / ours, 2)
    for server in ("embedded engine", "vllm engine"):
        for c in (8, 32):
            one, many = tps(server, "complete", c, 1), tps(server, "complete", c, 16)
            if one and many:
                out[f"completions, {c} clients, {server}: 16 adapters / 1 adapter (target >= 0.9)"] = \
                    round(many / one, 2)
    return out


def engine_servers(dtype: str, tensor_parallel_size: int) -> dict:
    """--engines: the embedded engine and vLLM's, in `dtype`, shedding off in both (throughput, not
    overload, is measured here: a refused closed-loop client would only come straight back)."""
    vllm = {"max_model_len": 512, "dtype": dtype, "tensor_parallel_size": tensor_parallel_size}
    apart = ["--dtype", dtype, "--max_queue_wait", "0"]
    return {"embedded engine": apart,
            "vllm engine": [*apart, "--engine", "vllm", "--max_queue", "256", "--engine_args", json.dumps(vllm)]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true")
    group.add_argument("--full", action="store_true")
    group.add_argument("--engines", action="store_true")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="--engines only")
    parser.add_argument("--tensor_parallel_size", type=int, default=1, help="--engines only: vLLM's")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the results")
    args = parser.parse_args(argv)
    mode = "full" if args.full else "engines" if args.engines else "quick"
    plan = MODES[mode]
    servers = engine_servers(args.dtype, args.tensor_parallel_size) if mode == "engines" else SERVERS
    began = time.perf_counter()
    cells: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_adapters(folder, 16)
        for server, extra in servers.items():
            process, url = start(folder, extra)
            try:
                todo = [("classify", c, a) for c, a in plan["classify"]] + [("complete", c, a) for c, a in plan["complete"]]
                if "vllm" in (extra or []):
                    todo += [(FLOOR, c, 0) for c in plan["floor"]]
                for kind, c, a in todo:
                    cell = asyncio.run(load(url, kind, c, a, plan["requests"], plan["seconds"],
                                            plan.get("max_tokens", 16)))
                    cells.setdefault(server, []).append(cell)
                    print(server, cell, flush=True)
                if server == "mixed (ours)":  # overload: 2x the queue's bound at once, zero 5xx expected
                    cell = asyncio.run(load(url, "classify", 128, 16, 256, plan["seconds"]))
                    cell["kind"] = "classify overload"
                    cells[server].append(cell)
                    print(server, cell, flush=True)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
    results = {"mode": mode, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores", "cells": cells, "ratios": ratios(cells),
               "wall_s": round(time.perf_counter() - began, 1), "setting": setting(args.dtype)}
    if mode == "engines" and (args.dtype != "float32" or args.tensor_parallel_size != 1):
        mode += f"-{args.dtype}-tp{args.tensor_parallel_size}"
    out = Path(args.out)
    (out / f"serving-{mode}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"serving-{mode}.md").write_text(report(results))
    if out == ROOT / "benchmarks" / "results" and not mode.startswith("engines"):  # its classify cells only
        plot(results, ROOT / "docs" / "img" / f"serving_{mode}.png")
    print(report(results))
    return results


def setting(dtype: str) -> str:
    import torch

    return f"{dtype}, {torch.cuda.get_device_name()}" if torch.cuda.is_available() else f"{dtype}, CPU"


if __name__ == "__main__":
    main()
