"""A training run in four stages: setup() -> fit() -> validate() -> finish().

    run = setup(options)    output folder, task data, model, optimiser, schedule; a resumed
                            run also restores its checkpoint into run.state
    fit(run)                optimiser steps until max_steps, validating every eval_steps and
                            checkpointing every save_steps
    validate(run)           score the validation split, keep the best adapter so far
    finish(run)             restore the best tensors, score the test split, write
                            results.json (once) and curves.png

`train(options)` runs them in order. Resume, search trials and "train then serve" all
enter at a named stage. Per optimiser step: gradient_accumulation_steps micro-batches per
process, each loss weighted by its share of the step's targets (so the update is the large
batch's), gradients all-reduced once (no_sync on the others), clipped, AdamW step, linear
schedule step. One process or many (Accelerate); the main process evaluates and writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..adapter import restore
from ..data import IGNORE, Collator
from ..evaluation import evaluate_with_predictions
from ..model import DeptModel
from . import outputs
from .checkpoint import (
    CheckpointError,
    find_checkpoint,
    load_checkpoint,
    read_options,
    save_checkpoint,
)
from .methods import (
    build_model,
    count_trainable,
    param_groups,
    save_trained,
    warmup_steps,
)
from .options import TrainOptions, current_names, result_fields
from .stream import micro_batch_start, stream_indices
from .task_data import TaskData, load_task_data

log = logging.getLogger("dept")


@dataclass
class TrainState:
    """What a checkpoint carries besides tensors (trainer_state.json). The data position is
    step · global batch (see stream.py) and the random generators are saved beside it."""

    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    before: dict | None = None
    """Validation metrics before the first step."""
    train_seconds: float = 0.0
    examples: int = 0
    window_losses: list[float] = field(default_factory=list)
    """Losses since the last log line: kept here so a resumed run logs the same numbers."""
    window_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> "TrainState":
        return cls(**record)


@dataclass
class Run:
    options: TrainOptions
    out: Path
    accelerator: object
    data: TaskData
    model: torch.nn.Module
    """As Accelerate prepared it (DDP-wrapped under several processes)."""
    plain: torch.nn.Module
    """The same model unwrapped: what is evaluated and saved."""
    optimizer: torch.optim.Optimizer
    scheduler: object
    collator: Collator
    log: outputs.MetricsLog
    learning_rates: dict[str, float]
    """Each group's rate as resolved (the scale-aware defaults filled in)."""
    state: TrainState
    wall_start: float

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


def loss_weight(labels: torch.Tensor) -> int:
    """What a batch's mean loss averages over: its target tokens (labels (B, L), -100 elsewhere)
    or, for an encoder head (labels (B,)), its rows."""
    return int((labels != IGNORE).sum()) if labels.dim() > 1 else labels.shape[0]


def mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def setup(options: TrainOptions) -> Run:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    wall_start = time.perf_counter()
    # Without an accelerator, Accelerate only takes the multi-process CPU (gloo) path
    # under torchrun / accelerate launch when told it is on CPU.
    on_cpu = not torch.accelerator.is_available()
    accelerator = Accelerator(mixed_precision=mixed_precision(options.run.mixed_precision), cpu=on_cpu)
    main = accelerator.is_main_process
    out = Path(options.run.output_dir)
    outputs.prepare_output_dir(out, resume=options.run.resume, overwrite=options.run.overwrite_output_dir, is_main=main)
    accelerator.wait_for_everyone()
    checkpoint = find_checkpoint(out) if options.run.resume else None
    if checkpoint is not None:  # before any data or model is loaded: a refusal costs nothing
        check_resumable(checkpoint, options)
    set_seed(options.run.seed)

    data = load_task_data(options)
    model, tokenizer, family, rms = build_model(options, data.num_labels, data.meta.to_dict())
    if family.has_head and data.num_labels is None:
        raise ValueError(f"task {options.run.task!r} has no classes or score for an encoder head")
    # s: an --init_from adapter brings its own (longer inputs would lose their ends, cue included).
    max_length = (model.dept_adapters[model.active_adapter].config.max_length if isinstance(model, DeptModel)
                  else options.adapter.max_length)
    truncate = (model.dept_adapters[model.active_adapter].config.on_overflow == "truncate"
                if isinstance(model, DeptModel) else True)
    collator = Collator(tokenizer, family, max_length, max_target_length=options.data.max_target_length,
                        pad_to_max_length=options.data.pad_to_max_length, truncate=truncate)
    groups = param_groups(model, options, rms)
    # Read before the scheduler exists: it sets every group's lr to warmup step 0's (0.0) at once.
    rates = {g["name"]: g["lr"] for g in groups}
    optimizer = torch.optim.AdamW(groups)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps(options), options.optimiser.max_steps)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    run = Run(options, out, accelerator, data, wrapped, accelerator.unwrap_model(wrapped), optimizer, scheduler,
              collator, outputs.MetricsLog(out / outputs.METRICS, enabled=main),
              rates, TrainState(), wall_start)

    if checkpoint is not None:
        record = load_checkpoint(checkpoint, trainable=dict(run.plain.trainable_parameters()), optimizer=optimizer, scheduler=scheduler,
                                 rank=accelerator.process_index)
        run.state = TrainState.from_dict(record)
        run.log.truncate_after(run.state.step)
        if main:
            log.info("resuming from step %d of %d (%s)", run.state.step, options.optimiser.max_steps, checkpoint)
    elif options.run.resume:
        run.log.truncate_after(-1)  # killed before its first checkpoint: start afresh, without its lines
    return run


def check_resumable(checkpoint: Path, options: TrainOptions) -> None:
    """Refuse to continue a run with options that would change its result, listing each one."""
    saved = read_options(checkpoint)  # flat, as every dept so far wrote it
    if saved is None:
        raise CheckpointError(f"{checkpoint}: records no options (written by an older dept), so resuming it "
                              f"cannot be checked; pass --overwrite_output_dir to start afresh")
    saved, now = current_names(saved), options.flat()
    differ = [f"{name}: {saved.get(name)!r} -> {now[name]!r}" for name in result_fields()
              if saved.get(name) != now[name]]
    if differ:
        raise CheckpointError(f"{checkpoint}: --resume with options that change the result; "
                              f"{'; '.join(differ)} (resume with the run's options, or use another --output_dir)")


def _evaluate(run: Run, examples) -> tuple[dict[str, float], list[str]]:
    """Metrics and each example's prediction."""
    meta = run.data.meta
    return evaluate_with_predictions(
        run.plain, run.collator, run.data.spec, examples, decoder=meta.decoder, target_words=meta.target_words,
        batch_size=run.options.evaluation.per_device_eval_batch_size, max_new_tokens=run.options.data.max_target_length,
        device=run.accelerator.device, qa_scoring=run.data.qa_scoring)


def _trained_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.trainable_parameters()}


def validate(run: Run) -> dict[str, float]:
    """Score the validation split at the current step; keep the adapter if it is the best yet.
    Returns the metrics ({} on other processes than the main one)."""
    state = run.state
    metrics: dict[str, float] = {}
    if run.is_main:
        metrics, _ = _evaluate(run, run.data.validation)
        run.log.append({"step": state.step, "split": "validation", **metrics})
        score = metrics[run.data.main_metric]
        if state.best_metric is None or score > state.best_metric:
            state.best_metric, state.best_step = score, state.step
            save_trained(run.plain, run.out, run.data.meta.to_dict())
            save_file(_trained_tensors(run.plain), str(run.out / outputs.BEST_TENSORS))
        if state.step == 0:
            state.before = metrics
    run.accelerator.wait_for_everyone()
    return metrics


def train_step(run: Run) -> dict[str, float]:
    """One optimiser step; returns the learning rates it used."""
    options, accelerator, state = run.options, run.accelerator, run.state
    rank, world = accelerator.process_index, accelerator.num_processes
    batch, accum = options.optimiser.per_device_train_batch_size, options.optimiser.gradient_accumulation_steps
    started = time.perf_counter()
    micro_batches = []
    for micro in range(accum):
        start = micro_batch_start(state.step, micro, rank, batch=batch, world=world, accumulation=accum)
        indices = stream_indices(start, batch, len(run.data.train), options.run.seed)
        micro_batches.append({k: v.to(accelerator.device)
                              for k, v in run.collator([run.data.train[i] for i in indices]).items()})
    # Each micro-batch's loss is a mean over its own targets. Weighing it by its share of
    # all the step's targets (every micro-batch, every process) makes accumulation and N
    # processes give exactly the large batch's gradient, also when targets differ in length.
    weights = [loss_weight(b["labels"]) for b in micro_batches]
    total = accelerator.reduce(torch.tensor(float(sum(weights)), device=accelerator.device),
                               reduction="sum").clamp(min=1)
    step_loss = torch.zeros((), device=accelerator.device)
    for micro, (inputs, weight) in enumerate(zip(micro_batches, weights)):
        sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(run.model)
        with sync, accelerator.autocast():
            loss = run.model(**inputs, trim_logits=True).loss
            # DDP averages gradients over processes, hence the factor world.
            accelerator.backward(loss * (weight * world / total))
        step_loss += loss.detach() * weight
    if options.optimiser.max_grad_norm:
        accelerator.clip_grad_norm_([p for _, p in run.plain.trainable_parameters()], options.optimiser.max_grad_norm)
    lrs = {f"lr_{g['name']}": g["lr"] for g in run.optimizer.param_groups}  # the rates of this update
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    state.step += 1
    state.examples += batch * world * accum
    state.train_seconds += seconds
    state.window_seconds += seconds  # training time only: no evaluation or checkpoint
    state.window_losses.append((accelerator.reduce(step_loss, reduction="sum") / total).item())
    return lrs


def fit(run: Run, on_validate=None) -> None:
    """`on_validate(run, metrics)`, if given, is called after each validation during training
    (not the one before the first step); a search trial reports there and may raise to stop."""
    options, state = run.options, run.state
    if state.step == 0 and options.evaluation.eval_at_start:
        validate(run)
    global_batch = (options.optimiser.per_device_train_batch_size * run.accelerator.num_processes
                    * options.optimiser.gradient_accumulation_steps)
    progress = tqdm(total=options.optimiser.max_steps, initial=state.step, disable=not run.is_main, desc="train",
                    dynamic_ncols=True)
    run.model.train()
    while state.step < options.optimiser.max_steps:
        lrs = train_step(run)
        step, last = state.step, state.step == options.optimiser.max_steps
        if step % options.run.logging_steps == 0 or last:
            window = state.window_losses
            record = {"step": step, "loss": sum(window) / len(window), **lrs,
                      "examples_per_second": len(window) * global_batch / max(state.window_seconds, 1e-9)}
            run.log.append(record)
            progress.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{record['examples_per_second']:.1f}",
                                 **{k: f"{v:.1e}" for k, v in lrs.items()})
            state.window_losses, state.window_seconds = [], 0.0
        progress.update(1)
        if step % options.evaluation.eval_steps == 0 or last:
            metrics = validate(run)
            if on_validate is not None:
                on_validate(run, metrics)
            run.model.train()
        if step % options.run.save_steps == 0 or last:
            save_checkpoint(run.out, trainable=dict(run.plain.trainable_parameters()), optimizer=run.optimizer, scheduler=run.scheduler,
                            trainer_state=state.to_dict(), options=options.flat(), rank=run.accelerator.process_index,
                            is_main=run.is_main, barrier=run.accelerator.wait_for_everyone)
    progress.close()


def finish(run: Run) -> dict:
    """Restore the best tensors, score the test split, write results.json and curves.png.
    Returns what results.json holds ({} on other processes than the main one)."""
    results: dict = {}
    state, data = run.state, run.data
    if run.is_main:
        best_file = run.out / outputs.BEST_TENSORS
        if best_file.is_file():
            restore(dict(run.plain.trainable_parameters()), load_file(str(best_file)))
        test_metrics, predictions = _evaluate(run, data.test) if data.test else ({}, [])
        if test_metrics:
            run.log.append({"step": state.best_step, "split": "test", **test_metrics})
            # One line per test example, in split order: what a bootstrap over examples needs.
            outputs.write_predictions(run.out / outputs.TEST_PREDICTIONS, predictions)
        history = run.log.read()
        validation = [r for r in history if r.get("split") == "validation"]
        results = {
            "options": run.options.flat(),
            "task": data.meta.task,
            "main_metric": data.main_metric,
            # QA runs say which answers they were scored against (their protocol's choice).
            **({"qa_scoring": data.qa_scoring} if data.qa_scoring else {}),
            "before_training": state.before,
            "best_step": state.best_step,
            "best_validation": next((r for r in validation if r["step"] == state.best_step), None),
            "test": test_metrics,
            "trainable_params": count_trainable(run.plain),
            "train_examples": len(data.train),
            "steps": state.step,
            "train_seconds": round(state.train_seconds, 2),
            "train_examples_per_second": round(state.examples / max(state.train_seconds, 1e-9), 2),
            "processes": run.accelerator.num_processes,
            "learning_rates": run.learning_rates,
            "wall_seconds": round(time.perf_counter() - run.wall_start, 2),
        }
        outputs.write_results(run.out / outputs.RESULTS, results)
        outputs.plot_curves(history, data.main_metric, run.out / outputs.CURVES)
    run.accelerator.wait_for_everyone()
    return results


def train(options: TrainOptions) -> dict:
    """Run one training job; returns what results.json holds. A run that fails before its
    first checkpoint removes what it wrote, so it never blocks the next attempt."""
    out = Path(options.run.output_dir)
    existed = out.exists()
    try:
        run = setup(options)
        fit(run)
        return finish(run)
    except BaseException:
        if int(os.environ.get("RANK", "0")) == 0:
            abandon(out, existed)
        raise


def abandon(out: Path, existed: bool) -> None:
    """Remove what a failed run wrote, if it got no checkpoint (there is nothing to resume)."""
    if out.is_dir() and outputs.is_run_folder(out) and outputs.is_unfinished(out):
        kept = outputs.clear_run_folder(out)
        if not existed and not kept:
            out.rmdir()
