"""What a run leaves in its output folder besides the adapter: metrics.jsonl, results.json, curves.png."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

RESULTS = "results.json"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
BEST_TENSORS = "best_trainable.safetensors"


class OutputDirError(ValueError):
    pass


def prepare_output_dir(path: Path, *, resume: bool, overwrite: bool, is_main: bool) -> None:
    """Refuse to mix two runs in one folder unless told to resume or overwrite."""
    has_run = path.is_dir() and any(path.iterdir())
    if has_run and not resume and not overwrite:
        raise OutputDirError(f"{path} already holds a run: pass --resume to continue it, "
                             f"--overwrite_output_dir to start afresh, or another --output_dir")
    if is_main:
        if has_run and overwrite and not resume:
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)


class MetricsLog:
    """metrics.jsonl: one JSON line per logging step and per evaluation (main process only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled

    def append(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """On resume, drop lines a killed run wrote after its last checkpoint, and its test
        line (written at the very end, under the best step): they will be redone."""
        if self.enabled and self.path.is_file():
            kept = [r for r in self.read() if r["step"] <= step and r.get("split") != "test"]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def write_results(path: Path, results: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


def plot_curves(records: list[dict], metric: str, path: Path) -> None:
    """Training loss and the validation metric against step, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if "loss" in r]
    evals = [r for r in records if r.get("split") == "validation" and metric in r]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    ax_loss.set(xlabel="step", ylabel="training loss", title="Training loss")
    ax_metric.plot([r["step"] for r in evals], [r[metric] for r in evals], marker="o", color="tab:green")
    ax_metric.set(xlabel="step", ylabel=metric, title=f"Validation {metric}")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
