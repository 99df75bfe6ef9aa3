"""The accuracy study's report: read the finished runs, score them with _stats, write tables
and the DePT − PT figure. Reads run folders only; runs nothing."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import _stats

POINT = 0.01  # metrics are fractions; one point is 0.01
DIFFERENCES = {"dept - pt": "DePT − PT", "dept-equal-time - pt": "DePT − PT at equal time",
               "dept - lora": "DePT − LoRA"}  # what the report and the figure call each difference


def finished_trials(search: Path) -> int:
    """Trials of a `dept search` folder that ended (complete or pruned)."""
    path = search / "trials.csv"
    if not path.is_file():
        return 0
    with path.open() as handle:
        return sum(row["state"] in ("COMPLETE", "PRUNED") for row in csv.DictReader(handle))


def _search_summary(search: Path) -> dict | None:
    path = search / "trials.csv"
    if not path.is_file():
        return None
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    done = [r for r in rows if r["state"] == "COMPLETE"]
    best = max(done, key=lambda r: float(r["value"]), default=None)
    keys = [k for k in rows[0] if k not in ("number", "state", "value", "last_step", "output_dir")] if rows else []
    return {"trials": len(rows), "complete": len(done), "pruned": sum(r["state"] == "PRUNED" for r in rows),
            "best_value": float(best["value"]) if best else None,
            "best_params": {k: float(best[k]) for k in keys if best and best[k]} if best else {},
            "wall_seconds": (json.loads((search / "job.json").read_text())["wall_seconds"]
                             if (search / "job.json").is_file() else None)}


def _seed_runs(folder: Path) -> list[tuple[dict, list[str]]]:
    from dept.training.outputs import TEST_PREDICTIONS, read_predictions

    runs = []
    for run in sorted(folder.glob("seed-*")):
        if (run / "results.json").is_file() and (run / TEST_PREDICTIONS).is_file():
            runs.append((json.loads((run / "results.json").read_text()), read_predictions(run / TEST_PREDICTIONS)))
    return runs


def analyse(study, runs: Path, data: Path) -> dict:
    """Every cell of the study with what has finished: scores, floor, intervals; and the
    means over the tasks where LoRA clears the floor."""
    from dept.tasks import get_task, load_task, main_metric

    cells = []
    for model, task in study.cells:
        folder = runs / model / task
        cap = study.options["max_eval_samples"]
        test = load_task(task, "test", data, seed=study.options["split_seed"])[:cap]
        cell: dict = {"model": model, "task": task, "metric": main_metric(task), "test_examples": len(test),
                      "methods": {}, "differences": {}}
        scored = {}
        for method in (*study.methods, "dept-equal-time"):
            found = _seed_runs(folder / method)
            search = _search_summary(folder / ("dept" if method == "dept-equal-time" else method) / "search")
            if not found:
                if search and method != "dept-equal-time":
                    cell["methods"][method] = {"seeds": 0, "search": search}
                continue
            assert all(len(p) == len(test) for _, p in found), f"{folder / method}: predictions != test split"
            scored[method] = _stats.Scored(task, test, [p for _, p in found])
            mean, sd = _stats.mean_sd(scored[method].scores)
            results = [r for r, _ in found]
            cell["methods"][method] = {
                "seeds": len(found), "scores": scored[method].scores, "mean": mean, "sd": sd,
                "trainable_params": results[0]["trainable_params"],
                "steps": statistics.mean(r["steps"] for r in results),
                "train_seconds": statistics.mean(r["train_seconds"] for r in results),
                "wall_seconds": sum(r["wall_seconds"] for r in results), "search": search}
        if not scored:
            cells.append(cell)
            continue
        regression = get_task(task).kind == "regression"
        floor = None if regression else _stats.majority(task, load_task(task, "train", data), test)
        cell["floor"] = 0.0 if regression else floor.scores[0]
        if "lora" in scored:
            cell.update(_lora_clears_floor(task, folder, study, data, regression))
        for a, b in (("dept", "pt"), ("dept", "lora"), ("dept-equal-time", "pt")):
            if a in scored and b in scored:
                cell["differences"][f"{a} - {b}"] = _stats.paired_difference(scored[a], scored[b])
        cells.append(cell)
    cleared = [c for c in cells if c.get("clears_floor")]
    means = {}
    for key in ("dept - pt", "dept - lora"):
        parts = [c["differences"][key] for c in cleared if key in c["differences"]]
        means[key] = _stats.mean_of_differences(parts)
        if means[key]:
            means[key]["cells"] = [f"{c['model']} {c['task']}" for c in cleared if key in c["differences"]]
    return {"cells": cells, "means_over_cleared": means, "targets": _targets(cells, means),
            "planned_cells": len(study.cells), "trials": study.trials, "seeds": list(study.seeds),
            "options": {k: str(v) for k, v in study.options.items()}}


def _lora_clears_floor(task: str, folder: Path, study, data: Path, regression: bool) -> dict:
    """Whether LoRA learned the task, decided on validation alone, so that nothing about the test
    split steers which tasks the means include: LoRA's best validation score per seed (its
    interval over seeds) above the majority floor on the same validation examples. Regression:
    a constant has no correlation, so the floor is 0."""
    from dept.tasks import load_task, main_metric

    metric = main_metric(task)
    scores = [r["best_validation"][metric] for r, _ in _seed_runs(folder / "lora") if r.get("best_validation")]
    if not scores:
        return {}
    if regression:
        floor = 0.0
    else:
        validation = load_task(task, "validation", data, seed=study.options["split_seed"])
        floor = _stats.majority(task, load_task(task, "train", data),
                                validation[:study.options["max_eval_samples"]]).scores[0]
    versus = _stats.seed_interval(scores)
    return {"validation_floor": floor, "lora_validation": versus, "clears_floor": bool(versus["low"] > floor)}


def _targets(cells: list[dict], means: dict) -> list[dict]:
    out = []
    if (m := means.get("dept - pt")) is not None:
        out.append({"target": "DePT >= PT + 2 points (mean over tasks that clear the floor)",
                    "measured": f"{m['difference'] / POINT:+.1f} points [{m['low'] / POINT:+.1f}, "
                                f"{m['high'] / POINT:+.1f}] over {m['tasks']} task(s)",
                    "verdict": _stats.verdict(m["low"], m["high"], 2 * POINT)})
    if (m := means.get("dept - lora")) is not None:
        ratios = [c["methods"]["lora"]["trainable_params"] / c["methods"]["dept"]["trainable_params"]
                  for c in cells if c.get("clears_floor") and "dept - lora" in c["differences"]]
        out.append({"target": "DePT within 1 point of LoRA with >= 5x fewer trainable parameters",
                    "measured": f"{m['difference'] / POINT:+.1f} points [{m['low'] / POINT:+.1f}, "
                                f"{m['high'] / POINT:+.1f}]; LoRA/DePT parameters {min(ratios):.1f}x",
                    "verdict": "no" if min(ratios) < 5 else _stats.verdict(m["low"], m["high"], -POINT)})
    return out


def without_replicates(record: dict) -> dict:
    """The record without the bootstrap replicates (thousands of numbers per interval)."""
    if isinstance(record, dict):
        return {k: without_replicates(v) for k, v in record.items() if k != "replicates"}
    if isinstance(record, list):
        return [without_replicates(v) for v in record]
    return record


def _ci(d: dict | None) -> str:
    if not d:
        return "–"
    return f"{d['difference'] / POINT:+.1f} [{d['low'] / POINT:+.1f}, {d['high'] / POINT:+.1f}]"


def _number(value: float | None, spec: str = ".3f") -> str:
    """A table entry: '–' for what is not measured (a best validation of 0.0 is a measurement)."""
    return "–" if value is None else format(value, spec)


def _score(m: dict | None) -> str:
    if not m or not m.get("seeds"):
        return "–"
    return f"{m['mean']:.3f} ± {m['sd']:.3f} ({m['seeds']})" if m["seeds"] > 1 else f"{m['mean']:.3f} (1)"


def markdown(record: dict) -> str:
    done = [c for c in record["cells"] if c["methods"]]
    lines = [f"# Accuracy: DePT vs PT vs LoRA ({record.get('mode', '')} mode)", "",
             f"`{record.get('command', '')}`: {len(done)} of {record['planned_cells']} cells with runs; "
             f"{record['trials']} search trials per method, seeds {record['seeds']}, options {record['options']}. "
             "Scores: test main metric, mean ± sd (seeds). Differences in points (0.01), "
             "95% bootstrap interval over test examples and seeds. Whether LoRA clears the majority floor "
             "(and so whether a task enters the means) is decided on validation: its seeds' best validation "
             "scores, t interval over seeds, against the floor on the same validation examples.", "",
             "| model | task | metric | test n | floor | DePT | PT | LoRA | LoRA clears floor | DePT − PT | "
             "DePT − LoRA |", "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for c in done:
        ms = c["methods"]
        clears = {True: "yes", False: "**no**", None: "–"}[c.get("clears_floor")]
        if c.get("lora_validation"):  # the validation evidence the decision rests on
            v = c["lora_validation"]
            clears += f" (val {v['difference']:.3f} [{v['low']:.3f}, {v['high']:.3f}] vs {c['validation_floor']:.3f})"
        lines.append(f"| {c['model']} | {c['task']} | {c['metric']} | {c['test_examples']} | "
                     f"{_number(c.get('floor'))} | {_score(ms.get('dept'))} | {_score(ms.get('pt'))} | "
                     f"{_score(ms.get('lora'))} | {clears} | {_ci(c['differences'].get('dept - pt'))} | "
                     f"{_ci(c['differences'].get('dept - lora'))} |")
    lines += ["", "Mean over the tasks where LoRA clears the majority floor:", ""]
    for key, m in record["means_over_cleared"].items():
        lines.append(f"- {DIFFERENCES[key]}: "
                     + (f"{_ci(m)} points over {', '.join(m['cells'])}" if m else "no such task yet"))
    if record["targets"]:
        lines += ["", "Verdicts follow the 95% interval: yes when it lies on the target's side, no when it lies "
                  "on the other, undecided when it straddles the target.", "",
                  "| target | measured | verdict |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['measured']} | {t['verdict']} |" for t in record["targets"]]
    else:
        lines += ["", "Targets: not measured (no task clears the floor yet)."]
    equal = [c for c in done if "dept-equal-time" in c["methods"] and c["methods"]["dept-equal-time"].get("seeds")]
    if equal:
        lines += ["", "At equal wall-clock time (DePT given the steps that take PT's training time):", "",
                  "| model | task | DePT steps | PT steps | DePT (equal time) | PT | difference |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for c in equal:
            ms = c["methods"]
            lines.append(f"| {c['model']} | {c['task']} | {ms['dept-equal-time']['steps']:.0f} | "
                         f"{ms['pt']['steps']:.0f} | {_score(ms['dept-equal-time'])} | {_score(ms['pt'])} | "
                         f"{_ci(c['differences'].get('dept-equal-time - pt'))} |")
    lines += ["", "Runs: trainable parameters, mean training seconds per run, search (trials complete/pruned, "
              "best validation, best rates), wall time of the search and of all seed runs:", "",
              "| model | task | method | params | train s | trials | best validation | best rates | search wall s | "
              "seeds wall s |", "|---|---|---|---:|---:|---|---:|---|---:|---:|"]
    for c in done:
        for method, m in c["methods"].items():
            s = m.get("search") or {}
            rates = ", ".join(f"{k} {v:.3g}" for k, v in (s.get("best_params") or {}).items())
            # What a method has not done yet (no seed runs, no finished search) is '–', not 0.
            lines.append(f"| {c['model']} | {c['task']} | {method} | {_number(m.get('trainable_params'), ',')} | "
                         f"{_number(m.get('train_seconds'), '.0f')} | {s.get('complete', 0)}/{s.get('pruned', 0)} | "
                         f"{_number(s.get('best_value'))} | {rates} | {_number(s.get('wall_seconds'), '.0f')} | "
                         f"{_number(m.get('wall_seconds'), '.0f')} |")
    missing = [f"{c['model']} {c['task']}" for c in record["cells"] if not c["methods"]]
    if missing:
        lines += ["", "Not run yet: " + ", ".join(missing) + "."]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    """DePT − PT (also at equal time) and DePT − LoRA per cell with 95% intervals, and the means
    over cleared tasks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{c['model']} {c['task']}" + ("" if c.get("clears_floor", True) else " (floor)"), c["differences"])
            for c in record["cells"] if c["differences"]]
    rows += [("mean (cleared)", {k: v for k, v in record["means_over_cleared"].items() if v})]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    series = ((-0.2, "dept - pt", "tab:blue"), (0.0, "dept-equal-time - pt", "tab:green"),
              (0.2, "dept - lora", "tab:orange"))
    for offset, key, colour in series:
        ys, xs, lo, hi = [], [], [], []
        for i, (_, diffs) in enumerate(rows):
            if key in diffs:
                d = diffs[key]
                ys.append(i + offset)
                xs.append(d["difference"] / POINT)
                lo.append((d["difference"] - d["low"]) / POINT)
                hi.append((d["high"] - d["difference"]) / POINT)
        if xs:
            ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", capsize=3, color=colour, label=DIFFERENCES[key])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("difference in test score (points), 95% bootstrap interval")
    if ax.get_legend_handles_labels()[0]:  # nothing to compare yet: no legend
        ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
