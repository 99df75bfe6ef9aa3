"""Accuracy at equal trainable parameters and equal steps: DePT vs PT vs LoRA vs full fine-tuning.

    python benchmarks/accuracy.py --quick     # MiniLM, 2 small tasks, 1 seed (< 10 min on 2 cores)
    python benchmarks/accuracy.py --full      # more tasks, seeds, SmolLM2, and a DePT rate search

Every run is `dept train` in its own process (the real CLI, nothing special-cased), writing
to benchmarks/runs/<mode>/...; a finished run (results.json present) is not run again, so a
killed grid resumes where it stopped. The summary goes to benchmarks/results/accuracy-<mode>.{json,md}
and a plot to docs/img/accuracy_<mode>.png. Real data is read in place from ../shared/data.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DEPT_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs"
IMG = ROOT / "docs" / "img"
METHODS = ("dept", "pt", "lora", "full")


@dataclass
class Grid:
    """One block of runs: every task x method x seed on one model with shared options."""

    model: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (42,)
    options: dict = field(default_factory=dict)
    """dept train flags shared by every run of the block."""
    rate_search: tuple[tuple[float, float], ...] = ()
    """(prompt lr, low-rank lr) pairs tried for DePT on the first task; the best by
    validation is then used for DePT on every task. Empty: the scale-aware defaults."""


COMMON = dict(vanilla_length=100, eval_at_start=False, logging_steps=10, per_device_eval_batch_size=32)
MINILM = dict(COMMON, max_seq_length=128, per_device_train_batch_size=16)
SMOL = dict(COMMON, max_seq_length=128, per_device_train_batch_size=8)

MODES = {
    "quick": [
        Grid("minilm-l6", ("sst2", "cb"), options=dict(MINILM, max_steps=50, eval_steps=50,
                                                        max_eval_samples=100, per_device_train_batch_size=8)),
    ],
    "full": [
        # The question first: DePT vs PT at equal parameters and steps, and LoRA, on the real LM.
        Grid("smollm2-135m", ("sst2",), methods=("dept", "pt", "lora"),
             options=dict(SMOL, max_seq_length=64, max_steps=100, eval_steps=100, max_eval_samples=300)),
        Grid("minilm-l6", ("sst2", "rte", "cb", "mrpc", "cola", "stsb"),
             options=dict(MINILM, max_steps=200, eval_steps=100, max_eval_samples=300),
             rate_search=((1.2e-2, 4.1e-5), (1.2e-2, 4.1e-4), (4e-2, 4.1e-5))),
        Grid("smollm2-135m", ("rte",), methods=("dept", "pt", "lora"),
             options=dict(SMOL, max_steps=150, eval_steps=75, max_eval_samples=139)),
    ],
}


def run_dir(mode: str, grid: Grid, task: str, method: str, seed: int, tag: str = "") -> Path:
    return RUNS / mode / grid.model / task / f"{method}{tag}-s{seed}"


def train(out: Path, grid: Grid, task: str, method: str, seed: int, extra: dict) -> dict:
    """One `dept train` run in a subprocess; cached by its results.json."""
    results = out / "results.json"
    if results.is_file():
        return json.loads(results.read_text())
    flags = dict(grid.options, **extra, model=grid.model, task=task, method=method, seed=seed,
                 data_dir=str(DATA), output_dir=str(out), overwrite_output_dir=True)
    cmd = [sys.executable, "-m", "dept.cli.main", "train"]
    for key, value in flags.items():
        cmd += [f"--{key}", str(value)]
    out.mkdir(parents=True, exist_ok=True)
    print(f"[{time.strftime('%H:%M:%S')}] {grid.model} {task} {method} seed={seed} {extra or ''}", flush=True)
    with (out.parent / f"{out.name}.log").open("w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return json.loads(results.read_text())


def search_rates(mode: str, grid: Grid) -> tuple[dict, list[dict]]:
    """Try each (prompt, low-rank) pair for DePT on the first task; return the best flags."""
    task, seed = grid.tasks[0], grid.seeds[0]
    tried = []
    for prompt_lr, lowrank_lr in grid.rate_search:
        extra = dict(learning_rate=prompt_lr, lora_embedding_lr=lowrank_lr)
        tag = f"-lr{prompt_lr:g}-{lowrank_lr:g}"
        result = train(run_dir(mode, grid, task, "dept", seed, tag), grid, task, "dept", seed, extra)
        tried.append({"learning_rate": prompt_lr, "lora_embedding_lr": lowrank_lr,
                      "validation": result["best_validation"][result["main_metric"]]})
    best = max(tried, key=lambda t: t["validation"])
    return {"learning_rate": best["learning_rate"], "lora_embedding_lr": best["lora_embedding_lr"]}, tried


def run_grid(mode: str, grid: Grid) -> dict:
    dept_rates, search = search_rates(mode, grid) if grid.rate_search else ({}, [])
    runs = []
    for task, method, seed in itertools.product(grid.tasks, grid.methods, grid.seeds):
        extra = dept_rates if method == "dept" else {}
        if method == "dept" and dept_rates and task == grid.tasks[0] and seed == grid.seeds[0]:
            tag = f"-lr{dept_rates['learning_rate']:g}-{dept_rates['lora_embedding_lr']:g}"
            out = run_dir(mode, grid, task, method, seed, tag)  # the search already ran it
        else:
            out = run_dir(mode, grid, task, method, seed)
        result = train(out, grid, task, method, seed, extra)
        metric = result["main_metric"]
        runs.append({"task": task, "method": method, "seed": seed, "metric": metric,
                     "validation": result["best_validation"][metric],
                     "test": result["test"].get(metric), "test_all": result["test"],
                     "trainable_params": result["trainable_params"], "train_seconds": result["train_seconds"],
                     "best_step": result["best_step"], "steps": result["steps"],
                     "learning_rates": result.get("learning_rates")})
    return {"model": grid.model, "options": grid.options, "rate_search": search, "dept_rates": dept_rates,
            "runs": runs}


def summarise(blocks: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (model, task, method)."""
    rows = []
    for block in blocks:
        keys = sorted({(r["task"], r["method"]) for r in block["runs"]},
                      key=lambda k: (k[0], METHODS.index(k[1])))
        for task, method in keys:
            runs = [r for r in block["runs"] if r["task"] == task and r["method"] == method]
            tests = [r["test"] for r in runs if r["test"] is not None]
            rows.append({"model": block["model"], "task": task, "method": method, "metric": runs[0]["metric"],
                         "seeds": len(runs), "test_mean": statistics.mean(tests) if tests else None,
                         "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                         "validation_mean": statistics.mean(r["validation"] for r in runs),
                         "trainable_params": runs[0]["trainable_params"],
                         "train_seconds": statistics.mean(r["train_seconds"] for r in runs)})
    return rows


def markdown(rows: list[dict], blocks: list[dict]) -> str:
    lines = ["| model | task | metric | method | trainable params | test (mean ± sd) | validation | "
             "train s | seeds |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        test = "–" if r["test_mean"] is None else f"{r['test_mean']:.3f} ± {r['test_std']:.3f}"
        lines.append(f"| {r['model']} | {r['task']} | {r['metric']} | {r['method']} | {r['trainable_params']:,} | "
                     f"{test} | {r['validation_mean']:.3f} | {r['train_seconds']:.0f} | {r['seeds']} |")
    for block in blocks:
        if block["rate_search"]:
            lines += ["", f"DePT rate search on {block['model']} ({block['runs'][0]['task']}, validation):", "",
                      "| prompt lr | low-rank lr | validation |", "|---:|---:|---:|"]
            lines += [f"| {t['learning_rate']:g} | {t['lora_embedding_lr']:g} | {t['validation']:.3f} |"
                      for t in block["rate_search"]]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["task"]) for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 3.8))
    width = 0.2
    for i, method in enumerate(METHODS):
        xs, ys, errs = [], [], []
        for j, group in enumerate(groups):
            match = [r for r in rows if (r["model"], r["task"]) == group and r["method"] == method]
            if match and match[0]["test_mean"] is not None:
                xs.append(j + (i - 1.5) * width)
                ys.append(match[0]["test_mean"])
                errs.append(match[0]["test_std"])
        if xs:  # a method that was not run gets no legend entry
            ax.bar(xs, ys, width, yerr=errs, label=method, capsize=2)
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:.3f}", (x, y), ha="center", va="bottom", fontsize=7)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_xticks(range(len(groups)), [f"{t}\n{m}" for m, t in groups], fontsize=8)
    ax.set_ylabel("test score (task's main metric)")
    ax.legend(ncol=4, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick")
    mode.add_argument("--full", action="store_const", dest="mode", const="full")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"accuracy benchmark: real data not found at {DATA} (set DEPT_SHARED_DATA); skipping")
        return 0
    started = time.time()
    blocks = []
    for grid in MODES[args.mode]:
        blocks.append(run_grid(args.mode, grid))
        publish(args.mode, blocks, started)  # after every block: a stopped grid still reports
    print(markdown(summarise(blocks), blocks))
    return 0


def publish(mode: str, blocks: list[dict], started: float) -> None:
    rows = summarise(blocks)
    RESULTS.mkdir(parents=True, exist_ok=True)
    IMG.mkdir(parents=True, exist_ok=True)
    record = {"mode": mode, "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "blocks_done": f"{len(blocks)} of {len(MODES[mode])}",
              "wall_seconds_this_invocation": round(time.time() - started, 1), "summary": rows, "blocks": blocks}
    (RESULTS / f"accuracy-{mode}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"accuracy-{mode}.md").write_text(markdown(rows, blocks))
    plot(rows, IMG / f"accuracy_{mode}.png")


if __name__ == "__main__":
    sys.exit(main())
