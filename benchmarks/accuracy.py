"""Accuracy at equal trainable parameters and equal steps: DePT vs PT vs LoRA vs full fine-tuning.

    python benchmarks/accuracy.py --quick               # MiniLM, 2 small tasks, 1 seed (< 10 min on 2 cores)
    python benchmarks/accuracy.py --full --workers 2    # SmolLM2 and MiniLM, 6 tasks, DePT rate search, seeds

Every run is `dept train` in its own process (the real CLI, nothing special-cased), writing
to benchmarks/runs/<mode>/...; a finished run (results.json present) is not run again, so a
killed grid resumes where it stopped. `--workers N` runs N at once with the cores shared out.
The summary goes to benchmarks/results/accuracy-<mode>.{json,md}, plots to
docs/img/accuracy_<mode>.png and accuracy_vs_m_<mode>.png. Real data is read in place from
../shared/data.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
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
    rates_from: int | None = None
    """Index of an earlier block of the same mode whose rate search sets DePT's rates here
    (a block that adds seeds to that one)."""
    prompt_lengths: tuple[int, ...] = ()
    """DePT's m values to run, each at PT's l=100 budget (rank from the solver). Empty: the
    default m=60 only."""


COMMON = dict(vanilla_length=100, eval_at_start=False, logging_steps=10, per_device_eval_batch_size=32)
MINILM = dict(COMMON, max_length=128, per_device_train_batch_size=16)
SMOL = dict(COMMON, max_length=128, per_device_train_batch_size=8)
MINILM_FULL = dict(MINILM, max_steps=200, eval_steps=100, max_eval_samples=300, per_device_train_batch_size=8)
GLUE6 = ("sst2", "rte", "cb", "mrpc", "cola", "stsb")

MODES = {
    "quick": [
        Grid("minilm-l6", ("sst2", "cb"), options=dict(MINILM, max_steps=50, eval_steps=50,
                                                        max_eval_samples=100, per_device_train_batch_size=8)),
    ],
    "full": [
        # The question first: DePT vs PT at equal parameters and steps, and LoRA, on the real LM.
        Grid("smollm2-135m", ("sst2",), methods=("dept", "pt", "lora"),
             options=dict(SMOL, max_length=64, max_steps=100, eval_steps=100, max_eval_samples=300)),
        Grid("minilm-l6", GLUE6, options=MINILM_FULL,
             # The scale-aware defaults (0.22 and 7.4e-4 x MiniLM's embedding RMS), the low-rank
             # rate 10x up, and the paper's T5 rates as printed.
             rate_search=((1.2e-2, 4.1e-5), (1.2e-2, 4.1e-4), (3e-1, 1e-4))),
        # Score against m at the same budget (m=60 is the main block's DePT, m=100 is PT).
        Grid("minilm-l6", ("sst2",), methods=("dept",), options=MINILM_FULL, rates_from=1,
             prompt_lengths=(0, 20, 40, 80)),
        # Two more seeds for the question DePT vs PT, the cheap (short-input) tasks first.
        Grid("minilm-l6", ("sst2", "cola", "mrpc", "stsb", "rte", "cb"), methods=("dept", "pt"), seeds=(43, 44),
             options=MINILM_FULL, rates_from=1),
    ],
}


def run_dir(mode: str, grid: Grid, task: str, method: str, seed: int, tag: str = "") -> Path:
    return RUNS / mode / grid.model / task / f"{method}{tag}-s{seed}"


@dataclass
class Job:
    """One `dept train` run of the grid."""

    out: Path
    grid: Grid
    task: str
    method: str
    seed: int
    extra: dict = field(default_factory=dict)
    """Flags of this run only (DePT's learning rates, its m)."""
    variant: str = ""
    """What sets this run apart from the method's default, for the report ("m=20")."""

    def cached(self) -> dict | None:
        """The finished run's results.json, or None."""
        results = self.out / "results.json"
        return json.loads(results.read_text()) if results.is_file() else None

    def run(self, threads: int) -> dict:
        """Run it in a subprocess (the real CLI) with `threads` intra-op threads."""
        flags = dict(self.grid.options, **self.extra, model=self.grid.model, task=self.task, method=self.method,
                     seed=self.seed, data_dir=str(DATA), output_dir=str(self.out), overwrite_output_dir=True)
        cmd = [sys.executable, "-m", "dept.cli.main", "train"]
        for key, value in flags.items():
            cmd += [f"--{key}", str(value)]
        self.out.mkdir(parents=True, exist_ok=True)
        # Several runs at once each get their share of the cores: oversubscribed BLAS threads
        # made steps several times slower here.
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        print(f"[{time.strftime('%H:%M:%S')}] {self.grid.model} {self.task} {self.method} seed={self.seed} "
              f"{self.extra or ''}", flush=True)
        with (self.out.parent / f"{self.out.name}.log").open("w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        return self.cached()


def search_jobs(mode: str, grid: Grid) -> list[Job]:
    """DePT on the block's first task and seed, once per (prompt, low-rank) rate pair."""
    task, seed = grid.tasks[0], grid.seeds[0]
    return [Job(run_dir(mode, grid, task, "dept", seed, f"-lr{prompt_lr:g}-{lowrank_lr:g}"), grid, task, "dept",
                seed, dict(learning_rate=prompt_lr, lora_embedding_lr=lowrank_lr))
            for prompt_lr, lowrank_lr in grid.rate_search]


def searched_rates(mode: str, grid: Grid) -> tuple[dict | None, list[dict]]:
    """The best finished search pair by validation (None while the search is unfinished) and
    every pair tried. A block with no search uses the scale-aware defaults ({})."""
    source = grid if grid.rates_from is None else MODES[mode][grid.rates_from]
    jobs = search_jobs(mode, source)
    tried = [dict(job.extra, validation=r["best_validation"][r["main_metric"]])
             for job in jobs if (r := job.cached()) is not None]
    if len(tried) < len(jobs):
        return None, tried
    if not tried:
        return {}, []
    best = max(tried, key=lambda t: t["validation"])
    return {k: best[k] for k in ("learning_rate", "lora_embedding_lr")}, tried


def grid_jobs(mode: str, grid: Grid) -> list[Job]:
    """Every task x method x seed of the block; DePT's are left out until its rates are known."""
    rates, _ = searched_rates(mode, grid)
    searched = {(job.task, job.seed, job.extra["learning_rate"], job.extra["lora_embedding_lr"]): job
                for job in search_jobs(mode, grid)}
    jobs = []
    for task, method, seed in itertools.product(grid.tasks, grid.methods, grid.seeds):
        if method != "dept":
            jobs.append(Job(run_dir(mode, grid, task, method, seed), grid, task, method, seed))
        elif rates is not None and grid.prompt_lengths:
            jobs += [Job(run_dir(mode, grid, task, method, seed, f"-m{m}"), grid, task, method, seed,
                         dict(rates, prompt_length=m), f"m={m}") for m in grid.prompt_lengths]
        elif rates is not None:  # the search's own run is reused, not run twice
            key = (task, seed, rates.get("learning_rate"), rates.get("lora_embedding_lr"))
            jobs.append(searched.get(key) or Job(run_dir(mode, grid, task, method, seed), grid, task, method,
                                                 seed, rates))
    return jobs


def run_jobs(jobs: list[Job], workers: int, on_done=lambda: None) -> list[str]:
    """Run the unfinished jobs, `workers` at a time; returns the failures (logged, not fatal)."""
    todo = [job for job in jobs if job.cached() is None]
    threads = max(1, (os.cpu_count() or 1) // workers)
    failures = []
    with ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(job.run, threads): job for job in todo}
        for future in as_completed(futures):
            if future.exception() is not None:
                job = futures[future]
                failures.append(f"{job.grid.model} {job.task} {job.method} seed={job.seed}: see {job.out}.log")
                print(f"FAILED {failures[-1]}", flush=True)
            on_done()
    return failures


def collect(mode: str, grid: Grid) -> dict:
    """The block's finished runs, read from their results.json."""
    rates, tried = searched_rates(mode, grid)
    runs = []
    for job in grid_jobs(mode, grid):
        if (result := job.cached()) is None:
            continue
        metric = result["main_metric"]
        runs.append({"model": grid.model, "task": job.task, "method": job.method, "variant": job.variant,
                     "seed": job.seed, "metric": metric, "validation": result["best_validation"][metric],
                     "test": result["test"].get(metric), "test_all": result["test"],
                     "trainable_params": result["trainable_params"], "train_seconds": result["train_seconds"],
                     "wall_seconds": result.get("wall_seconds"), "best_step": result["best_step"],
                     "steps": result["steps"], "learning_rates": result.get("learning_rates")})
    return {"model": grid.model, "options": grid.options, "rate_search": tried if grid.rate_search else [],
            "dept_rates": rates, "runs": runs}


def summarise(blocks: list[dict]) -> list[dict]:
    """Mean and spread over seeds per (model, task, method, variant), whichever blocks ran the seeds."""
    every_run = [r for block in blocks for r in block["runs"]]
    keys = sorted({(r["model"], r["task"], r["method"], r["variant"]) for r in every_run},
                  key=lambda k: (k[0], k[1], METHODS.index(k[2]), k[3]))
    rows = []
    for key in keys:
        runs = [r for r in every_run if (r["model"], r["task"], r["method"], r["variant"]) == key]
        tests = [r["test"] for r in runs if r["test"] is not None]
        model, task, method, variant = key
        rows.append({"model": model, "task": task, "method": method, "variant": variant,
                     "metric": runs[0]["metric"],
                     "seeds": len(runs), "test_mean": statistics.mean(tests) if tests else None,
                     "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                     "validation_mean": statistics.mean(r["validation"] for r in runs),
                     "trainable_params": runs[0]["trainable_params"],
                     "train_seconds": statistics.mean(r["train_seconds"] for r in runs),
                     "wall_seconds": statistics.mean(r["wall_seconds"] or 0.0 for r in runs)})
    return rows


@functools.lru_cache
def majority_scores(mode: str) -> dict[str, float | None]:
    """Each task's test score when every test example gets the training split's most frequent
    target, averaged over the seeds the grid uses (small tasks' test splits depend on the seed),
    under the grid's evaluation cap: the floor a method must beat to have learned anything.
    None for regression (a constant has no correlation)."""
    from dept.tasks import compute_metrics, get_task, load_task, main_metric

    plans: dict[str, tuple[set[int], int | None]] = {}
    for grid in MODES[mode]:
        for task in grid.tasks:
            seeds, _ = plans.setdefault(task, (set(), grid.options.get("max_eval_samples")))
            seeds.update(grid.seeds)
    scores: dict[str, float | None] = {}
    for task, (seeds, cap) in plans.items():
        if get_task(task).kind == "regression":
            scores[task] = None
            continue
        per_seed = []
        for seed in sorted(seeds):
            train = load_task(task, "train", DATA, seed=seed)
            test = load_task(task, "test", DATA, seed=seed)[:cap]
            majority = Counter(example.target for example in train).most_common(1)[0][0]
            per_seed.append(compute_metrics(task, [majority] * len(test), test)[main_metric(task)])
        scores[task] = statistics.mean(per_seed)
    return scores


def side_by_side(rows: list[dict], majority: dict[str, float | None]) -> list[str]:
    """One line per (model, task): each method's test mean ± sd (seeds), the majority floor,
    and DePT's training time relative to PT's."""
    def cell(r: dict | None) -> str:
        if r is None or r["test_mean"] is None:
            return "–"
        spread = f" ± {r['test_std']:.3f}" if r["seeds"] > 1 else ""
        return f"{r['test_mean']:.3f}{spread} ({r['seeds']})"

    lines = ["| model | task | metric | floor | " + " | ".join(METHODS) + " | DePT train time / PT |",
             "|---|---|---|---:|" + "---:|" * len(METHODS) + "---:|"]
    for model, task in sorted({(r["model"], r["task"]) for r in rows}):
        by_method = {r["method"]: r for r in rows if (r["model"], r["task"]) == (model, task) and not r["variant"]}
        if not by_method:
            continue
        floor = majority.get(task)
        dept, pt = by_method.get("dept"), by_method.get("pt")
        ratio = f"{dept['train_seconds'] / pt['train_seconds']:.2f}" if dept and pt else "–"
        lines.append(f"| {model} | {task} | {next(iter(by_method.values()))['metric']} | "
                     f"{'–' if floor is None else f'{floor:.3f}'} | "
                     + " | ".join(cell(by_method.get(m)) for m in METHODS) + f" | {ratio} |")
    return lines


def markdown(rows: list[dict], blocks: list[dict], majority: dict[str, float | None] | None = None) -> str:
    lines = side_by_side(rows, majority or {}) + [
        "", "Every (model, task, method, variant):", "",
        "| model | task | metric | method | trainable params | test (mean ± sd) | validation | train s | wall s | seeds |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        test = "–" if r["test_mean"] is None else f"{r['test_mean']:.3f} ± {r['test_std']:.3f}"
        method = f"{r['method']} ({r['variant']})" if r["variant"] else r["method"]
        lines.append(f"| {r['model']} | {r['task']} | {r['metric']} | {method} | {r['trainable_params']:,} | "
                     f"{test} | {r['validation_mean']:.3f} | {r['train_seconds']:.0f} | {r['wall_seconds']:.0f} | "
                     f"{r['seeds']} |")
    if majority:
        lines += ["", "Majority-class floor (every test example given the training split's most frequent "
                  "label; mean over the grid's seeds):", "", "| task | floor |", "|---|---:|"]
        lines += [f"| {task} | {'–' if score is None else f'{score:.3f}'} |" for task, score in sorted(majority.items())]
    for block in blocks:
        if block["rate_search"]:
            lines += ["", f"DePT rate search on {block['model']} ({block['runs'][0]['task']}, validation):", "",
                      "| prompt lr | low-rank lr | validation |", "|---:|---:|---:|"]
            lines += [f"| {t['learning_rate']:g} | {t['lora_embedding_lr']:g} | {t['validation']:.3f} |"
                      for t in block["rate_search"]]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, majority: dict[str, float | None] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["task"]) for r in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 3.8))
    width = 0.2
    for i, method in enumerate(METHODS):
        xs, ys, errs = [], [], []
        for j, group in enumerate(groups):
            match = [r for r in rows if (r["model"], r["task"]) == group and r["method"] == method
                     and not r["variant"]]
            if match and match[0]["test_mean"] is not None:
                xs.append(j + (i - 1.5) * width)
                ys.append(match[0]["test_mean"])
                errs.append(match[0]["test_std"])
        if xs:  # a method that was not run gets no legend entry
            ax.bar(xs, ys, width, yerr=errs, label=method, capsize=2)
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:.3f}", (x, y), ha="center", va="bottom", fontsize=6, rotation=90)
    floors = [(j, (majority or {}).get(task)) for j, (_, task) in enumerate(groups)]
    for n, (j, floor) in enumerate((j, f) for j, f in floors if f is not None):
        ax.hlines(floor, j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1,
                  label="majority-class floor" if n == 0 else None)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_xticks(range(len(groups)), [f"{t}\n{m}" for m, t in groups], fontsize=8)
    ax.set_ylabel("test score (task's main metric)")
    ax.legend(ncol=5, fontsize=8, loc="upper left")
    ax.set_ylim(top=max(r["test_mean"] or 0 for r in rows) * 1.2 + 0.05)  # room for labels and legend
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_against_m(rows: list[dict], path: Path) -> bool:
    """Score and training time against m at one parameter budget, for each (model, task) with an
    m sweep: the sweep's DePT runs, the default DePT (m=60) and PT (m=l=100, r=0). Returns
    whether there was a sweep to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["task"]) for r in rows if r["variant"].startswith("m=")})
    if not groups:
        return False
    fig, (score_ax, time_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for model, task in groups:
        points = {}
        for r in rows:
            if (r["model"], r["task"]) != (model, task) or r["test_mean"] is None:
                continue
            if r["variant"].startswith("m="):
                points[int(r["variant"][2:])] = r
            elif r["method"] == "dept" and not r["variant"]:
                points[60] = r
            elif r["method"] == "pt":
                points[100] = r
        ms = sorted(points)
        label = f"{model} {task}"
        score_ax.errorbar(ms, [points[m]["test_mean"] for m in ms], [points[m]["test_std"] for m in ms],
                          marker="o", capsize=2, label=label)
        if 100 in points:
            time_ax.plot(ms, [points[m]["train_seconds"] / points[100]["train_seconds"] for m in ms],
                         marker="o", label=label)
    score_ax.set_xlabel("soft prompt length m (same trainable parameters; m=100 is PT)")
    score_ax.set_ylabel("test score")
    time_ax.set_xlabel("soft prompt length m")
    time_ax.set_ylabel("training wall time / PT")
    for ax in (score_ax, time_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick")
    mode.add_argument("--full", action="store_const", dest="mode", const="full")
    parser.add_argument("--workers", type=int, default=1,
                        help="runs at once; the cores are shared out between them (default 1)")
    parser.add_argument("--blocks", type=int, nargs="*", metavar="N",
                        help="run only these blocks (0-based; default all); the report still covers "
                             "every finished run. With no N: report only")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"accuracy benchmark: real data not found at {DATA} (set DEPT_SHARED_DATA); skipping")
        return 0
    grids = MODES[args.mode]
    chosen = range(len(grids)) if args.blocks is None else args.blocks
    if bad := [n for n in chosen if not 0 <= n < len(grids)]:
        parser.error(f"--blocks {bad}: {args.mode} mode has blocks 0..{len(grids) - 1}")
    started = time.time()
    report = lambda: publish(args.mode, started)  # noqa: E731  after every run: a stopped grid still reports
    # The rate searches first (their winner sets DePT's rates), then everything else.
    sources = {n if grids[n].rates_from is None else grids[n].rates_from for n in chosen}
    searches = [job for n in sorted(sources) for job in search_jobs(args.mode, grids[n])]
    failures = run_jobs(searches, args.workers, report)
    failures += run_jobs([job for n in chosen for job in grid_jobs(args.mode, grids[n])], args.workers, report)
    blocks = publish(args.mode, started)
    print(markdown(summarise(blocks), blocks, majority_scores(args.mode)))
    if failures:
        print("failed runs:\n  " + "\n  ".join(failures))
    return 1 if failures else 0


def publish(mode: str, started: float) -> list[dict]:
    """Report every finished run of the mode's grid, whichever process ran it."""
    blocks = [b for b in (collect(mode, grid) for grid in MODES[mode]) if b["runs"]]
    rows = summarise(blocks)
    majority = majority_scores(mode)
    RESULTS.mkdir(parents=True, exist_ok=True)
    IMG.mkdir(parents=True, exist_ok=True)
    record = {"mode": mode, "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "runs_done": f"{sum(len(b['runs']) for b in blocks)} of "
                           f"{sum(len(g.tasks) * len(g.methods) * len(g.seeds) for g in MODES[mode])}",
              "wall_seconds_this_invocation": round(time.time() - started, 1), "summary": rows,
              "majority_class_floor": majority, "blocks": blocks}
    (RESULTS / f"accuracy-{mode}.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / f"accuracy-{mode}.md").write_text(markdown(rows, blocks, majority))
    plot(rows, IMG / f"accuracy_{mode}.png", majority)
    plot_against_m(rows, IMG / f"accuracy_vs_m_{mode}.png")
    return blocks


if __name__ == "__main__":
    sys.exit(main())
