"""Measure the two output defaults on a real task: target words and decoder.

    python benchmarks/defaults.py     # SmolLM2-135M on SST-2 from ../shared/data, ~25 min on 2 cores

For each target-word choice (natural label words vs the reference's label indices) it
trains DePT with `dept train` (same seed, steps and rates), then scores the best adapter
on the same validation examples with both decoders: rank classification and greedy
generation. Writes benchmarks/results/defaults.{json,md}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DEPT_SHARED_DATA", ROOT.parent / "shared" / "data"))
RUNS = ROOT / "benchmarks" / "runs" / "defaults"
RESULTS = ROOT / "benchmarks" / "results"
TASK, MODEL, EVAL_SAMPLES = "sst2", "smollm2-135m", 200
TRAIN = dict(max_steps=60, eval_steps=30, save_steps=30, per_device_train_batch_size=8, max_length=64,
             vanilla_length=40, prompt_length=20, max_eval_samples=EVAL_SAMPLES, eval_at_start=True, no_test=True,
             seed=42, decoder="rank")


def dept(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dept.cli.main", *args], check=True, capture_output=True,
                          text=True, cwd=ROOT).stdout


def run(target_words: str) -> dict:
    out = RUNS / target_words
    if not (out / "results.json").is_file():
        flags = dict(TRAIN, model=MODEL, task=TASK, data_dir=str(DATA / "glue"), output_dir=str(out),
                     target_words=target_words, overwrite_output_dir=True)
        print(f"[{time.strftime('%H:%M:%S')}] training with target_words={target_words}", flush=True)
        dept("train", *[f"--{k}={v}" for k, v in flags.items()])
    results = json.loads((out / "results.json").read_text())
    row = {"target_words": target_words, "before_training_rank": results["before_training"]["accuracy"],
           "after_rank": results["best_validation"]["accuracy"], "best_step": results["best_step"]}
    for decoder in ("rank", "generate"):
        printed = dept("eval", "--adapter", str(out), "--task", TASK, "--data_dir", str(DATA / "glue"),
                       "--split", "validation", "--decoder", decoder, "--max_eval_samples", str(EVAL_SAMPLES))
        row[f"eval_{decoder}"] = json.loads(printed.strip().splitlines()[-1])["accuracy"]
    return row


def main() -> int:
    if not DATA.is_dir():
        print(f"defaults benchmark: real data not found at {DATA}; skipping")
        return 0
    rows = [run(words) for words in ("natural", "index")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"date": time.strftime("%Y-%m-%d"), "task": TASK, "model": MODEL, "train": TRAIN,
              "validation_examples": EVAL_SAMPLES, "rows": rows}
    (RESULTS / "defaults.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"SmolLM2-135M, DePT (m=20, s=64), {TRAIN['max_steps']} steps, SST-2 validation "
             f"({EVAL_SAMPLES} held-out training examples), accuracy:", "",
             "| target words | before training (rank) | after: rank classification | after: greedy generation |",
             "|---|---:|---:|---:|"]
    lines += [f"| {r['target_words']} | {r['before_training_rank']:.3f} | {r['eval_rank']:.3f} | "
              f"{r['eval_generate']:.3f} |" for r in rows]
    (RESULTS / "defaults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
