"""What a run leaves in its output folder besides the adapter: metrics.jsonl, results.json, curves.png."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ..errors import UserError

log = logging.getLogger("dept")

RESULTS = "results.json"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
BEST_TENSORS = "best_trainable.safetensors"
TEST_PREDICTIONS = "test_predictions.jsonl"
# Written first into every run folder dept makes. Only a folder that carries it is ever
# emptied, and then only of the files dept writes (below, plus those the marker lists).
MARKER = ".dept-run"
CHECKPOINT_NAMES = ("checkpoint", "checkpoint.tmp", "checkpoint.old")
KNOWN_OUTPUTS = (MARKER, RESULTS, METRICS, CURVES, BEST_TENSORS, TEST_PREDICTIONS, "results.tmp", "test_predictions.tmp", *CHECKPOINT_NAMES,
                 "adapter_config.json", "adapter_model.safetensors",
                 "adapter_config.json.tmp", "adapter_model.safetensors.tmp")


class OutputDirError(UserError, ValueError):
    """An output folder that cannot take this run (it names the folder and what to do)."""


def is_run_folder(path: Path) -> bool:
    return (path / MARKER).is_file()


def _listed_outputs(path: Path) -> list[str]:
    try:
        return list(json.loads((path / MARKER).read_text()).get("outputs", []))
    except (OSError, ValueError, AttributeError):
        return []


def record_outputs(path: Path, names: list[str]) -> None:
    """Add files a run wrote under names not known in advance (a LoRA or full model's files)
    to the marker, so that overwriting the run later removes them too."""
    record = {"outputs": sorted(set(_listed_outputs(path)) | set(names))}
    (path / MARKER).write_text(json.dumps(record) + "\n")


def clear_run_folder(path: Path) -> list[str]:
    """Remove what dept wrote in a run folder; returns the names of other files left in place."""
    ours = set(KNOWN_OUTPUTS) | set(_listed_outputs(path))
    kept = []
    for entry in sorted(path.iterdir()):
        if entry.name not in ours:
            kept.append(entry.name)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return kept


def is_unfinished(path: Path) -> bool:
    """A run folder whose run stopped before its first checkpoint: nothing there to resume or keep."""
    return not (path / RESULTS).is_file() and not any((path / n / "trainer_state.json").is_file()
                                                      for n in CHECKPOINT_NAMES)


def prepare_output_dir(path: Path, *, resume: bool, overwrite: bool, is_main: bool) -> bool:
    """Make `path` ready for a run; True when it starts empty (a new run, not a resumed one).

    Refuses any non-empty folder that dept did not make; never mixes two runs in one folder
    unless told to resume or overwrite. A folder whose run died before its first checkpoint
    (nothing to resume) is emptied, so a failed attempt never blocks the next one."""
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"--output_dir {path}: exists and is not a folder")
    entries = [e.name for e in path.iterdir()] if path.is_dir() else []
    ours = is_run_folder(path)
    if entries and not ours:
        raise OutputDirError(f"--output_dir {path}: holds files dept did not write ({', '.join(sorted(entries)[:3])}"
                             f"{', ...' if len(entries) > 3 else ''}); nothing was changed: choose a new or "
                             f"empty folder")
    fresh = not entries
    if ours and not (resume and not is_unfinished(path)):
        if not (overwrite or resume or is_unfinished(path)):
            raise OutputDirError(f"--output_dir {path}: already holds a run (finished or resumable): pass --resume "
                                 f"to continue it, --overwrite_output_dir to start afresh, or another --output_dir")
        if is_main:
            kept = clear_run_folder(path)
            if kept:
                log.info("left files dept did not write in %s: %s", path, ", ".join(kept))
        fresh = True
    if is_main:
        path.mkdir(parents=True, exist_ok=True)
        if not is_run_folder(path):
            record_outputs(path, [])
    return fresh


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


def write_predictions(path: Path, predictions: list[str]) -> None:
    """One JSON line {"prediction": ...} per example, in the split's order."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps({"prediction": p}) + "\n" for p in predictions))
    tmp.replace(path)


def read_predictions(path: Path) -> list[str]:
    return [json.loads(line)["prediction"] for line in Path(path).read_text().splitlines() if line]


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
