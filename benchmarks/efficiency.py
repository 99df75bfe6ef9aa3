"""Efficiency of DePT against prompt tuning, PEFT's prompt tuning and the frozen-model floors.

    python benchmarks/efficiency.py --quick   # T5-small s=128/256, SmolLM2 s=128, SST-2 padding; < 10 min
    python benchmarks/efficiency.py --full    # + T5-base, SmolLM2 s=256, RTE padding; about an hour

Per (model, s): training step time (forward, backward, AdamW step), peak training memory,
and inference throughput (greedy generation of 3 tokens; rank classification of 2
candidates) for every configuration in `_common.setups`, on the same batch, the same
thread count, interleaved round-robin, medians over repeats. Peak memory is the peak of
live tensor bytes during a step (`_common.peak_tensor_mb`); full mode adds peak RSS in a
fresh process per configuration (`_common.rss_child`). Then dynamic padding against
pad-to-256 on real SST-2 / RTE dev batches. Writes benchmarks/results/efficiency-<mode>.json
and .md and docs/img/efficiency_<model>.png.
"""

from __future__ import annotations

import argparse
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


PREFIX_SETUPS = (("PT", 100, True), ("DePT m=40", 40, False), ("DePT m=60", 60, False))
"""(name, m, rank 0?) for the shared-prefix comparison; DePT's r comes from the budget l = 100."""


def measure_prefix(batch_size: int = 8, s: int = 128, repeats: int = 5, warmup: int = 1) -> dict:
    """The shared prefix against the laid-out rows on SmolLM2 at SST-2 lengths: training step
    (forward with trim_logits, backward, AdamW) and rank classification of 2 candidates, the
    persistent prompt cache warm; floors: the frozen base on the input tokens alone."""
    from statistics import median

    from dept.budget import solve_budget
    from dept.config import DeptConfig
    from dept.model import DeptModel

    base, _, _, tokenizer = C.load_model(C.SMOLLM2)
    d, vocab = base.get_input_embeddings().embedding_dim, base.config.vocab_size
    batch = C.sst2_like_batch(batch_size, vocab)
    sources = (batch[0][:, :-2], batch[1][:, :-2], None)       # rank classification: sources alone
    candidates = [[5, 2], [7, 2]]
    runners = {}
    for name, m, pt in PREFIX_SETUPS:
        r = 0 if pt else solve_budget(100, s, d, prompt_length=m).rank
        model = DeptModel(base, DeptConfig(prompt_length=m, rank=r, max_length=s, prompt_init="random"),
                          tokenizer=tokenizer)
        with torch.no_grad():  # B = 0 at init; a trained-looking update costs the same and is not a no-op
            for _, _, p in model.dept_adapters["default"].adapter_params():
                p.add_(torch.randn_like(p) * 1e-3)
        runners[name] = (C.PrefixRunner(model), m, r)
    floor = next(iter(runners.values()))[0]
    fns = {"floor": partial(floor.floor_train, batch)}
    for name, (runner, _, _) in runners.items():
        fns[f"{name} shared"] = partial(runner.train_step, batch, True)
        fns[f"{name} laid-out"] = partial(runner.train_step, batch, False)
    step = C.time_interleaved(fns, warmup, repeats)
    with torch.no_grad():
        fns = {"floor": partial(floor.floor_rank, sources, candidates)}
        for name, (runner, _, _) in runners.items():
            fns[f"{name} shared"] = partial(runner.rank, sources, True, candidates)
            fns[f"{name} laid-out"] = partial(runner.rank, sources, False, candidates)
        rank = C.time_interleaved(fns, warmup, repeats)
    out = {"model": C.SMOLLM2, "s": s, "batch_size": batch_size, "tokens_per_row": float(batch[1].sum(1).float().mean()),
           "repeats": repeats, "floor_step_s": step["floor"], "floor_rank_s": rank["floor"], "configs": {}}
    for name, (_, m, r) in runners.items():
        st, su = median(step[f"{name} shared"]), median(step[f"{name} laid-out"])
        rs, ru = median(rank[f"{name} shared"]), median(rank[f"{name} laid-out"])
        out["configs"][name] = {
            "m": m, "r": r, "step_shared_s": step[f"{name} shared"], "step_laid_out_s": step[f"{name} laid-out"],
            "rank_shared_s": rank[f"{name} shared"], "rank_laid_out_s": rank[f"{name} laid-out"],
            "step_ratio": st / su, "step_vs_floor": st / median(step["floor"]),
            "eval_examples_per_s_shared": batch_size / rs, "eval_examples_per_s_laid_out": batch_size / ru,
            "eval_time_vs_floor": rs / median(rank["floor"]), "eval_ratio": rs / ru}
    return out


def prefix_markdown(result: dict) -> str:
    lines = [f"# Shared prefix vs laid-out rows ({result['model']}, batch {result['batch_size']}, "
             f"~{result['tokens_per_row']:.0f} tokens per row, s={result['s']}, medians of {result['repeats']})", "",
             "| config | m | r | step shared (s) | step laid-out (s) | shared / laid-out | "
             "eval ex/s shared (cached) | eval ex/s laid-out | eval time / floor |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    from statistics import median
    for name, c in result["configs"].items():
        lines.append(f"| {name} | {c['m']} | {c['r']} | {median(c['step_shared_s']):.3f} | "
                     f"{median(c['step_laid_out_s']):.3f} | {c['step_ratio']:.2f} | "
                     f"{c['eval_examples_per_s_shared']:.1f} | {c['eval_examples_per_s_laid_out']:.1f} | "
                     f"{c['eval_time_vs_floor']:.2f} |")
    lines += ["", f"Floor (frozen model on the input tokens alone): training step "
              f"{median(result['floor_step_s']):.3f} s, evaluation "
              f"{result['batch_size'] / median(result['floor_rank_s']):.1f} examples/s."]
    return "\n".join(lines) + "\n"


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
    which.add_argument("--prefix", action="store_true",
                       help="only the shared prefix vs the laid-out rows, SmolLM2 at SST-2 lengths (~3 min)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, the same for every configuration")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="the shared GLUE data (for padding)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    C.quiet_libraries()
    if args.prefix:
        started = time.perf_counter()
        result = {"command": "python benchmarks/efficiency.py --prefix", "machine": machine(args.threads),
                  "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **measure_prefix()}
        result["wall_time_s"] = time.perf_counter() - started
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "prefix-quick.json").write_text(json.dumps(result, indent=1))
        (args.out_dir / "prefix-quick.md").write_text(prefix_markdown(result))
        print(prefix_markdown(result))
        return result
    name = "full" if args.full else "quick"
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
    return results


if __name__ == "__main__":
    main()
