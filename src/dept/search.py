"""`dept search`: an Optuna study over `dept train` options, each trial an ordinary run.

    space = the --search_space YAML, or the two learning rates log-uniform over x1/10 .. x10
            of their scale-aware defaults (PROMPT_LR_PER_RMS, LOWRANK_LR_PER_RMS) times the
            base model's embedding RMS (LoRA/full: their body rate); trial 0 is the defaults
    trial = setup(options + sampled values, output_dir/trial_NNN) -> fit(run, on_validate=report)
            -> finish(run); `report` hands the validation metric at each evaluation to the
            median pruner, which may stop the trial there (optuna.TrialPruned)
    out   = best.yaml (accepted by `dept train --config`), trials.csv, plots/*.png

The study lives in an Optuna RDB storage (default: SQLite in the output folder), so running
the same command again after a kill continues it: --n_trials is the study's total, and only
the missing trials are run. Trials killed mid-run are marked failed by Optuna's heartbeat.

Search-space YAML, one entry per TrainOptions field (name or alias):

    learning_rate:     {low_rms: 0.022, high_rms: 2.2}    # x embedding RMS, log-uniform
    lowrank_lr:        {low: 1.0e-5, high: 1.0e-3, log: true}
    rank:              {low: 0, high: 16, type: int}
    prompt_length:     {choices: [20, 40, 60]}
"""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .errors import OptionError, UserError
from .options import Options, opt, read_yaml_mapping
from .training.methods import BASELINE_LR
from .training.options import LOWRANK_LR_PER_RMS, PROMPT_LR_PER_RMS, TrainOptions, current_names

log = logging.getLogger("dept")

MARKER = "search.json"
BEST_CONFIG = "best.yaml"
TRIALS_CSV = "trials.csv"
PLOTS = "plots"
STORAGE_FILE = "study.db"
DEFAULT_RANGE = 10.0  # the default space spans default/10 .. default*10


class SearchError(UserError, ValueError):
    """A search space, storage or output folder no study can use."""


class SearchOptions(Options):
    n_trials: int = opt(20, minimum=1)
    """trials in the study in all (a resumed study runs only the missing ones)"""
    timeout: float | None = opt(None, positive=True)
    """stop starting trials after this many seconds"""
    storage: str | None = opt(None)
    """Optuna RDB storage URL (default: sqlite:///OUTPUT_DIR/study.db), so a stopped study resumes"""
    study_name: str = opt('dept-search')
    """the study's name in the storage"""
    search_space: str | None = opt(None)
    """YAML file: option -> {low, high[, log, type]}, {low_rms, high_rms} (x embedding RMS) or {choices: [...]}
    (default: the two learning rates, x1/10 .. x10 of their defaults)"""
    n_startup_trials: int = opt(3, minimum=0)
    """median pruner: trials that are never pruned, before pruning starts"""
    n_warmup_steps: int = opt(0, minimum=0)
    """median pruner: steps of a trial before it may be pruned"""
    sampler_seed: int | None = opt(0)
    """seed of the TPE sampler (null: random)"""


@dataclass(frozen=True)
class Param:
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    kind: str = "float"  # float, int, categorical
    choices: tuple = ()


def default_space(options: TrainOptions, rms: float) -> list[Param]:
    """The prompt rate and (for DePT with r > 0) the low-rank rate, log-uniform around their
    defaults; LoRA and full fine-tuning: their body rate, which does not scale with the
    embeddings, around its default (BASELINE_LR)."""
    if options.run.method in BASELINE_LR:
        rate = BASELINE_LR[options.run.method]
        return [Param("learning_rate", rate / DEFAULT_RANGE, rate * DEFAULT_RANGE, log=True)]
    space = [Param("learning_rate", PROMPT_LR_PER_RMS * rms / DEFAULT_RANGE, PROMPT_LR_PER_RMS * rms * DEFAULT_RANGE,
                   log=True)]
    if options.run.method == "dept" and options.adapter.rank != 0:
        space.append(Param("lowrank_lr", LOWRANK_LR_PER_RMS * rms / DEFAULT_RANGE,
                           LOWRANK_LR_PER_RMS * rms * DEFAULT_RANGE, log=True))
    return space


def read_space(path: str | Path, rms: float) -> list[Param]:
    """Parse a search-space YAML file (see the module docstring)."""
    loaded = read_yaml_mapping(path, "--search_space", SearchError, "option names to ranges")
    if not loaded:
        raise SearchError(f"--search_space {path}: expected a mapping of option names to ranges")
    names = TrainOptions.spellings()
    kinds = {name: str(f.annotation) for _, name, f in TrainOptions.leaves()}
    space = []
    for key, spec in loaded.items():
        where = f"--search_space {path}: {key}"
        if key not in names:
            raise SearchError(f"{where}: not a dept train option")
        name = names[key]
        if name in ("output_dir", "resume", "overwrite_output_dir"):
            raise SearchError(f"{where}: the search sets this itself")
        if not isinstance(spec, dict):
            raise SearchError(f"{where}: expected a mapping such as {{low: 1e-4, high: 1e-2}} or {{choices: [...]}}")
        unknown = sorted(set(spec) - {"low", "high", "low_rms", "high_rms", "log", "type", "choices"})
        if unknown:
            raise SearchError(f"{where}: unknown key(s) {unknown}")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise SearchError(f"{where}: choices must be a non-empty list")
            space.append(Param(name, kind="categorical", choices=tuple(spec["choices"])))
            continue
        relative = "low_rms" in spec or "high_rms" in spec
        lo, hi = (spec.get("low_rms"), spec.get("high_rms")) if relative else (spec.get("low"), spec.get("high"))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise SearchError(f"{where}: needs numbers low and high (or low_rms and high_rms)")
        kind = spec.get("type") or ("int" if "int" in str(kinds[name]) and "float" not in str(kinds[name])
                                    else "float")
        if kind not in ("int", "float"):
            raise SearchError(f"{where}: type must be int or float, got {kind!r}")
        if relative:
            lo, hi = lo * rms, hi * rms
        log_scale = bool(spec.get("log", relative))
        if not lo < hi or (log_scale and lo <= 0):
            raise SearchError(f"{where}: needs low < high{' and low > 0 on a log scale' if log_scale else ''}")
        space.append(Param(name, float(lo) if kind == "float" else int(lo),
                           float(hi) if kind == "float" else int(hi), log_scale, kind))
    return space


def suggest(trial, space: list[Param]) -> dict:
    values = {}
    for p in space:
        if p.kind == "categorical":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            values[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log)
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return values


def _embedding_rms(options: TrainOptions) -> float:
    from .pretrained import load_base
    from .training.methods import embedding_rms

    base, _, _ = load_base(options.run.model_name_or_path)
    return embedding_rms(base)


def _prepare_folder(out: Path, record: dict) -> None:
    """A new or empty folder, or one this same search made (same options and space)."""
    marker = out / MARKER
    if out.exists() and any(out.iterdir()):
        if not marker.is_file():
            raise SearchError(f"--output_dir {out}: exists, is not empty and holds no {MARKER}; "
                              f"choose a new or empty folder")
        saved = json.loads(marker.read_text())
        differ = [f"{k}: {saved.get(k)!r} -> {record[k]!r}" for k in record if saved.get(k) != record[k]]
        if differ:
            raise SearchError(f"--output_dir {out}: holds a search with other options ({'; '.join(differ)}); "
                              f"use another --output_dir")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def search(options: TrainOptions, search_options: SearchOptions) -> dict:
    """Run (or continue) the study; write best.yaml, trials.csv and the plots. Returns a summary."""
    try:
        import optuna
    except ImportError:
        raise SearchError("dept search needs Optuna: pip install 'dept[search]' (or pip install optuna)") from None

    from .training.loop import finish, fit, setup

    out = Path(options.run.output_dir).resolve()
    if search_options.search_space:
        read_space(search_options.search_space, 1.0)  # its mistakes before any model loads
    rms = _embedding_rms(options)
    space = read_space(search_options.search_space, rms) if search_options.search_space \
        else default_space(options, rms)
    record = {"train_options": {k: v for k, v in options.flat().items() if k not in ("resume",)},
              "space": [p.__dict__ | {"choices": list(p.choices)} for p in space],
              "study_name": search_options.study_name}
    _prepare_folder(out, record)
    storage_url = search_options.storage or f"sqlite:///{out / STORAGE_FILE}"
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with warnings.catch_warnings():  # the heartbeat (kills are noticed) is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(storage_url, heartbeat_interval=30, grace_period=120)
    except (SQLAlchemyError, ValueError, ImportError) as err:  # a bad URL, an unreachable database, no driver
        raise SearchError(f"--storage {storage_url}: {str(err).splitlines()[0]}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=search_options.study_name, storage=storage, load_if_exists=True, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=search_options.sampler_seed,
                                           n_startup_trials=max(1, min(10, search_options.n_trials // 2))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=search_options.n_startup_trials,
                                           n_warmup_steps=search_options.n_warmup_steps))
    if not search_options.search_space:
        _queue_defaults(study, space)
    done = optuna.trial.TrialState
    finished = [t for t in study.trials if t.state in (done.COMPLETE, done.PRUNED)]
    remaining = search_options.n_trials - len(finished)

    def objective(trial) -> float:
        values = suggest(trial, space)
        folder = out / f"trial_{trial.number:03d}"
        trial.set_user_attr("output_dir", str(folder))
        try:
            trial_options = options.replaced(**values, output_dir=str(folder), overwrite_output_dir=True,
                                             resume=False)
        except OptionError as err:
            raise SearchError(f"trial {trial.number}: {err}") from None
        run = setup(trial_options)
        main_metric = run.data.main_metric
        trial.set_user_attr("main_metric", main_metric)

        def report(run, metrics: dict) -> None:
            if not metrics:  # not the main process
                return
            trial.report(metrics[main_metric], run.state.step)
            if trial.should_prune():
                log.info("trial %d pruned at step %d (%s %.4g)", trial.number, run.state.step, main_metric,
                         metrics[main_metric])
                raise optuna.TrialPruned()

        fit(run, on_validate=report)
        results = finish(run)
        best = results["best_validation"] or {}  # validation always runs at the last step
        return float(best.get(main_metric, math.nan))

    if remaining > 0:
        log.info("study %r: %d trial(s) done, running %d more", search_options.study_name, len(finished), remaining)
        study.optimize(objective, n_trials=remaining, timeout=search_options.timeout)
    return write_outputs(study, options, space, out)


def _queue_defaults(study, space: list[Param]) -> None:
    """The first trial is the defaults (the centre of the default space), so the study's best is
    never worse on validation than not searching at all. Queued again if the trial that ran them
    was killed (a stale trial, which Optuna marks failed) before it finished."""
    import optuna

    defaults = {p.name: math.sqrt(p.low * p.high) for p in space}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    state = optuna.trial.TrialState
    alive = (state.COMPLETE, state.PRUNED, state.WAITING, state.RUNNING)
    # current_names: a study begun before `lora_embedding_lr` became `lowrank_lr` is continued
    if not any(t.state in alive and defaults in (current_names(t.params),
                                                 current_names(t.system_attrs.get("fixed_params") or {}))
               for t in study.trials):
        study.enqueue_trial(defaults)


def best_config(study, options: TrainOptions, out: Path) -> dict:
    """The options of the best trial as a `dept train --config` file: what differs from the
    defaults, the best values, and an output folder of its own."""
    defaults = TrainOptions().flat()
    chosen = {k: v for k, v in options.flat().items()
              if v != defaults[k] and k not in ("output_dir", "resume", "overwrite_output_dir")}
    chosen.update(current_names(study.best_trial.params))
    chosen["output_dir"] = str(out / "best")
    TrainOptions(**chosen)  # what dept train will check
    return chosen


def write_outputs(study, options: TrainOptions, space: list[Param], out: Path) -> dict:
    import yaml
    from optuna.trial import TrialState

    trials = study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    with open(out / TRIALS_CSV, "w", newline="") as handle:
        names = [p.name for p in space]
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "value", *names, "last_step", "output_dir"])
        for t in trials:
            last = max(t.intermediate_values) if t.intermediate_values else ""
            writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                             *[current_names(t.params).get(n, "") for n in names], last,
                             t.user_attrs.get("output_dir", "")])
    summary = {"study": study.study_name, "trials": len(trials), "complete": len(complete),
               "pruned": sum(t.state == TrialState.PRUNED for t in trials),
               "failed": sum(t.state == TrialState.FAIL for t in trials),
               "trials_csv": str(out / TRIALS_CSV)}
    if complete:
        best = study.best_trial
        config = best_config(study, options, out)
        (out / BEST_CONFIG).write_text(yaml.safe_dump(config, sort_keys=True))
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params,
                       best_config=str(out / BEST_CONFIG))
    summary["plots"] = plot_study(study, [p.name for p in space], out / PLOTS)
    return summary


def plot_study(study, param_names: list[str], folder: Path) -> list[str]:
    """Optuna's matplotlib plots: history, importances (>= 2 complete trials), each searched option
    (the two rates by default) against the score. A plot Optuna cannot draw is skipped, and said."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    folder.mkdir(exist_ok=True)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    plots = [("history.png", lambda: vis.plot_optimization_history(study))]
    if len(complete) >= 2:
        plots.append(("param_importances.png", lambda: vis.plot_param_importances(study)))
    if complete and param_names:
        plots.append(("params_vs_score.png", lambda: vis.plot_slice(study, params=param_names)))
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, draw in plots:
            try:
                axes = draw()
            except (ValueError, RuntimeError) as err:  # e.g. importances of an option that never varied
                log.info("plot %s skipped: %s", name, str(err).splitlines()[0] if str(err) else type(err).__name__)
                plt.close("all")
                continue
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.savefig(folder / name, dpi=100, bbox_inches="tight")  # Optuna's own layout, uncropped
            plt.close(figure)
            written.append(str(folder / name))
    return written
