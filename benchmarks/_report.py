"""Ratios, targets, the markdown tables and the plots, from the raw measurements."""

from __future__ import annotations

import statistics
from pathlib import Path

TIME_SLACK = 0.03     # DePT's step may exceed "frozen + m tokens" by 3%
RATIO_SLACK = 0.03    # DePT / PT may exceed the token ratio (s+m)/(s+l) by 0.03
PADDING_SPEEDUP = 3.0  # dynamic padding vs pad-to-256 on SST-2


LEGEND = """Columns: *input ms* the configuration's own input work alone (prompt, A·B, layout, their
backward, the optimiser step; `Runner.input_step`); *step s* median wall-clock training step
(forward, backward, AdamW); *spread* (max - min) / median over repeats; *×frozen*, *×PT* the
median over rounds of the per-round ratio (configurations ran back to back in each round);
*peak MB* peak live tensor memory during a step above what was live before it (profiler
allocation events; the CPU analogue of `torch.cuda.max_memory_allocated`); *RSS MB* peak RSS
of a step in a fresh process above the RSS before it (full mode); *gen* greedy decoding of 3
new tokens; *rank* 2 candidates, one forward each, the same code for every configuration;
*rank API* dept's `DeptModel.score_candidates` (source encoded once). Throughputs in examples/s."""


def _median(xs):
    return statistics.median(xs) if xs else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def _paired(a: list[float], b: list[float]):
    """Median over rounds of a_i / b_i: both ran in the same round, so a slow patch of the
    machine (other tenants) scales both and cancels in the ratio."""
    return statistics.median(x / y for x, y in zip(a, b)) if a and b else None


def summarise(run: dict) -> dict:
    """Per configuration: medians, throughputs and the ratios to the floor and to PT."""
    s, l, B = run["s"], run["vanilla_length"], run["batch_size"]
    cfgs = run["configs"]
    pt = cfgs[f"pt-{l}"]
    rows = []
    for n, c in cfgs.items():
        step = _median(c["step_s"])
        gen, rank = _median(c["generate_s"]), _median(c["rank_s"])
        rows.append({
            "config": n, "m": c["m"], "r": c["r"], "trainable_params": c["trainable_params"],
            "tokens": s + c["m"], "token_ratio": (s + c["m"]) / (s + l),
            "input_ms": 1000 * _median(c["input_step_s"]), "step_s": step, "step_spread": (max(c["step_s"]) - min(c["step_s"])) / step,
            "step_vs_floor": _paired(c["step_s"], cfgs["frozen"]["step_s"]),
            "step_vs_pt": _paired(c["step_s"], pt["step_s"]),
            "train_peak_mb": c["train_peak_mb"], "mem_vs_pt": _ratio(c["train_peak_mb"], pt["train_peak_mb"]),
            "rss_peak_mb": c.get("rss_peak_mb"), "rss_vs_pt": _ratio(c.get("rss_peak_mb"), pt.get("rss_peak_mb")),
            "generate_eps": _ratio(B, gen), "generate_vs_pt": _paired(pt["generate_s"], c["generate_s"]),
            "rank_eps": _ratio(B, rank), "rank_vs_pt": _paired(pt["rank_s"], c["rank_s"]),
            "rank_api_eps": _ratio(B, _median(c.get("rank_api_s", []))),
        })
    return {"rows": rows, "targets": targets(run)}


def targets(run: dict) -> list[dict]:
    s, l, cfgs = run["s"], run["vanilla_length"], run["configs"]
    where = f"{run['model']} s={s}"
    pt, peft = cfgs[f"pt-{l}"], cfgs[f"peft-pt-{l}"]
    out = []

    def add(name, value, limit, at_most=True):
        met = None if value is None else (value <= limit if at_most else value >= limit)
        out.append({"where": where, "target": name, "value": value, "limit": limit, "met": met})

    for n, c in cfgs.items():
        if c["kind"] != "dept":
            continue
        m = c["m"]
        ratio = (s + m) / (s + l)
        floor = cfgs[f"frozen+{m}"]
        add(f"step {n} / frozen+{m}", _paired(c["step_s"], floor["step_s"]), 1 + TIME_SLACK)
        # The same ratio built from parts: the floor's whole step plus DePT's extra input work.
        extra = _median(c["input_step_s"]) - _median(floor["input_step_s"])
        add(f"step {n} / frozen+{m} (floor + isolated extra work)", 1 + extra / _median(floor["step_s"]),
            1 + TIME_SLACK)
        add(f"step {n} / pt-{l}", _paired(c["step_s"], pt["step_s"]), ratio + RATIO_SLACK)
        add(f"memory {n} / pt-{l}", _ratio(c["train_peak_mb"], pt["train_peak_mb"]), ratio + RATIO_SLACK)
    add(f"step pt-{l} / peft-pt-{l}", _paired(pt["step_s"], peft["step_s"]), 1.0)
    extra = _median(pt["input_step_s"]) - _median(peft["input_step_s"])
    add(f"step pt-{l} / peft-pt-{l} (peft + isolated extra work)", 1 + extra / _median(peft["step_s"]), 1.0)
    add(f"generate ex/s pt-{l} / peft-pt-{l}", _paired(peft["generate_s"], pt["generate_s"]), 1.0, at_most=False)
    add(f"rank ex/s pt-{l} / peft-pt-{l}", _paired(peft["rank_s"], pt["rank_s"]), 1.0, at_most=False)
    return out


def padding_targets(padding: list[dict]) -> list[dict]:
    return [{"where": f"{p['model']} {p['task']}", "target": f"dynamic / pad-to-{p['s']} ex/s ({phase})",
             "value": p["speedup"][phase], "limit": PADDING_SPEEDUP, "met": p["speedup"][phase] >= PADDING_SPEEDUP}
            for p in padding if p["task"] == "SST-2" for phase in ("eval", "train")]


def _f(x, fmt="{:.3f}"):
    return "–" if x is None else fmt.format(x)


def markdown(results: dict) -> str:
    lines = [f"# Efficiency benchmark ({results['mode']} mode)", "",
             f"Date: {results['date']}. Machine: {results['machine']['cpu']}, {results['machine']['nproc']} cores, "
             f"{results['machine']['threads']} torch threads, torch {results['machine']['torch']}, "
             f"transformers {results['machine']['transformers']}, peft {results['machine']['peft']}. "
             f"Load average before/after: {results['machine']['loadavg_start']} / {results['machine'].get('loadavg_end')}. "
             f"Wall time: {results.get('wall_time_s', 0):.0f} s.", ""]
    lines += [LEGEND, ""]
    for run in results["runs"]:
        summary = run["summary"]
        lines += [f"## {run['model']}, s={run['s']}, batch {run['batch_size']} ({run['weights']} weights)", "",
                  "| config | m | r | params | tokens | (s+m)/(s+l) | input ms | step s | spread | ×frozen | ×PT "
                  "| peak MB | mem ×PT | RSS MB | gen ex/s | gen ×PT | rank ex/s | rank ×PT | rank API ex/s |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for r in summary["rows"]:
            lines.append(
                f"| {r['config']} | {r['m']} | {r['r']} | {r['trainable_params']:,} | {r['tokens']} "
                f"| {r['token_ratio']:.3f} | {r['input_ms']:.1f} | {_f(r['step_s'])} | {_f(r['step_spread'], '{:.0%}')} "
                f"| {_f(r['step_vs_floor'])} | {_f(r['step_vs_pt'])} | {_f(r['train_peak_mb'], '{:.0f}')} "
                f"| {_f(r['mem_vs_pt'])} | {_f(r['rss_peak_mb'], '{:.0f}')} | {_f(r['generate_eps'], '{:.1f}')} | {_f(r['generate_vs_pt'])} "
                f"| {_f(r['rank_eps'], '{:.1f}')} | {_f(r['rank_vs_pt'])} | {_f(r['rank_api_eps'], '{:.1f}')} |")
        lines.append("")
    if results.get("padding"):
        lines += ["## Dynamic padding vs pad-to-256 (real dev batches)", "",
                  "| model | task | examples | batch | columns/example ours | columns/example ref "
                  "| eval ex/s ours | eval ex/s ref | eval × | train ex/s ours | train ex/s ref | train × |",
                  "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for p in results["padding"]:
            d, ref = p["dynamic"], p["reference"]
            lines.append(
                f"| {p['model']} | {p['task']} | {p['examples']} | {p['batch_size']} "
                f"| {d['columns_per_example']:.0f} | {ref['columns_per_example']:.0f} "
                f"| {d['eval']['examples_per_s']:.1f} | {ref['eval']['examples_per_s']:.1f} | {p['speedup']['eval']:.2f} "
                f"| {d['train']['examples_per_s']:.1f} | {ref['train']['examples_per_s']:.1f} | {p['speedup']['train']:.2f} |")
        lines.append("")
    lines += ["## Targets", "", "| where | target | value | limit | met |", "|---|---|--:|--:|---|"]
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['where']} | {t['target']} | {_f(t['value'])} | {t['limit']:.3f} | {met} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, img_dir: Path) -> list[Path]:
    """Per model: step time and peak memory relative to PT(l) against m (paper figs. 3, 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for model in dict.fromkeys(r["model"] for r in results["runs"]):
        runs = [r for r in results["runs"] if r["model"] == model]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, label in ((axes[0], "step_vs_pt", "training step time"), (axes[1], "mem_vs_pt", "peak training memory")):
            for i, run in enumerate(runs):
                s, l, colour = run["s"], run["vanilla_length"], f"C{i}"
                rows = {r["config"]: r for r in run["summary"]["rows"]}
                ms = sorted(r["m"] for r in rows.values() if r["config"].startswith("dept-"))
                dept = [rows[f"dept-{m}"][key] for m in ms]
                if any(v is not None for v in dept):
                    ax.plot(ms + [l], dept + [1.0], "o-", color=colour, label=f"DePT, s={s} (PT at m={l})")
                floor = [(m, rows[f"frozen+{m}"][key]) for m in ms + [l] if f"frozen+{m}" in rows]
                if floor and all(v is not None for _, v in floor):
                    ax.plot(*zip(*floor), "s--", color=colour, alpha=0.6, label=f"frozen + m tokens, s={s}")
                if rows[f"peft-pt-{l}"][key] is not None:
                    ax.plot([l], [rows[f"peft-pt-{l}"][key]], "x", color=colour, ms=10, label=f"PEFT PT, s={s}")
                grid = range(min(ms), l + 1)
                ax.plot(grid, [(s + m) / (s + l) for m in grid], ":", color=colour, label=f"(s+m)/(s+l), s={s}")
            ax.set_xlabel("soft prompt length m (DePT at the l=100 budget)")
            ax.set_ylabel(f"{label} / PT(l=100)")
            ax.set_title(f"{model}: {label}")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        suffix = "" if results["mode"] == "full" else f"_{results['mode']}"  # quick never hides full
        path = Path(img_dir) / f"efficiency_{model}{suffix}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
