"""The training loop: setup() -> fit() -> test, on one process or many (Accelerate).

Per optimiser step: gradient_accumulation_steps micro-batches per process, each loss
weighted by its share of the step's targets (so the update is the large batch's),
gradients all-reduced once (no_sync on the others), clipped, AdamW step, linear schedule step.
Every eval_steps the main process scores the validation split with the task's metrics
and keeps the best adapter; every save_steps all state goes to a resumable checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data import IGNORE, Collator
from ..evaluation import evaluate
from ..model import DeptModel
from . import records
from .checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from .methods import build_model, count_trainable, param_groups, save_trained, warmup_steps
from .options import TrainOptions
from .stream import micro_batch_start, stream_indices


@dataclass
class Splits:
    train: list
    validation: list
    test: list
    task_meta: dict
    num_labels: int | None
    main_metric: str


def load_splits(options: TrainOptions) -> Splits:
    from ..tasks import candidate_targets, get_task, load_task, main_metric

    spec = get_task(options.task)
    common = dict(data_dir=options.data_dir, protocol=options.protocol, seed=options.seed,
                  target_words=options.target_words, from_hub=options.from_hub)
    train = load_task(options.task, "train", k_shot=options.k_shot_examples, **common)
    validation = load_task(options.task, "validation", **common)
    test = [] if options.no_test or options.protocol == "official" else load_task(options.task, "test", **common)
    if options.max_train_samples:
        train = train[:options.max_train_samples]
    if options.max_eval_samples:
        validation, test = validation[:options.max_eval_samples], test[:options.max_eval_samples]
    candidates = candidate_targets(options.task, options.target_words)
    num_labels = len(candidates) if candidates else (1 if spec.kind == "regression" else None)
    # Saved with the adapter: `dept eval` rebuilds the same splits (the paper's protocol
    # splits with the seed) and decodes the same way.
    meta = {"task": spec.name, "target_words": options.target_words, "decoder": options.decoder,
            "protocol": options.protocol, "seed": options.seed}
    return Splits(train, validation, test, meta, num_labels, main_metric(options.task))


def loss_weight(labels: torch.Tensor) -> int:
    """What a batch's mean loss averages over: its target tokens (labels (B, L), -100 elsewhere)
    or, for an encoder head (labels (B,)), its rows."""
    return int((labels != IGNORE).sum()) if labels.dim() > 1 else labels.shape[0]


def mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def train(options: TrainOptions) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    wall_start = time.perf_counter()
    # Without an accelerator, Accelerate only takes the multi-process CPU (gloo) path
    # under torchrun / accelerate launch when told it is on CPU.
    on_cpu = not torch.accelerator.is_available()
    accelerator = Accelerator(mixed_precision=mixed_precision(options.mixed_precision), cpu=on_cpu)
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    out = Path(options.output_dir)
    records.prepare_output_dir(out, resume=options.resume, overwrite=options.overwrite_output_dir, is_main=main)
    accelerator.wait_for_everyone()
    set_seed(options.seed)

    splits = load_splits(options)
    model, tokenizer, family, rms = build_model(options, splits.num_labels, splits.task_meta)
    if family.has_head and splits.num_labels is None:
        raise ValueError(f"task {options.task!r} has no classes or score for an encoder head")
    # s: an --init_from adapter brings its own (longer inputs would lose their ends, cue included).
    max_length = (model.dept_adapters[model.active_adapter].config.max_length if isinstance(model, DeptModel)
                  else options.max_seq_length)
    collator = Collator(tokenizer, family, max_length, max_target_length=options.max_target_length,
                        pad_to_max_length=options.pad_to_max_length)
    groups = param_groups(model, options, rms)
    learning_rates = {g["name"]: g["lr"] for g in groups}  # as resolved (scale-aware defaults)
    optimizer = torch.optim.AdamW(groups)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps(options), options.max_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    plain = accelerator.unwrap_model(model)
    trainable = [p for p in model.parameters() if p.requires_grad]

    log = records.MetricsLog(out / records.METRICS, enabled=main)
    state = {"step": 0, "best_metric": None, "best_step": None, "train_seconds": 0.0, "examples": 0,
             "before": None}
    checkpoint = find_checkpoint(out) if options.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model=plain, optimizer=optimizer, scheduler=scheduler, rank=rank)
        log.truncate_after(state["step"])
    elif options.resume:
        log.truncate_after(-1)  # killed before its first checkpoint: start afresh, without its lines

    def run_eval(split_examples) -> dict[str, float]:
        return evaluate(plain, collator, options.task, split_examples, decoder=options.decoder,
                        target_words=options.target_words, batch_size=options.per_device_eval_batch_size,
                        max_new_tokens=options.max_target_length, device=accelerator.device)

    def validate(step: int) -> None:
        if main:
            metrics = run_eval(splits.validation)
            log.append({"step": step, "split": "validation", **metrics})
            score = metrics[splits.main_metric]
            if state["best_metric"] is None or score > state["best_metric"]:
                state["best_metric"], state["best_step"] = score, step
                save_trained(plain, out, splits.task_meta)
                save_file({n: p.detach().cpu().contiguous() for n, p in plain.named_parameters()
                           if p.requires_grad}, str(out / records.BEST_TENSORS))
            if step == 0:
                state["before"] = metrics
        accelerator.wait_for_everyone()

    if state["step"] == 0 and options.eval_at_start:
        validate(0)

    batch, accum = options.per_device_train_batch_size, options.gradient_accumulation_steps
    global_batch = batch * world * accum
    progress = tqdm(total=options.max_steps, initial=state["step"], disable=not main, desc="train",
                    dynamic_ncols=True)
    model.train()
    # The logging window lives in the state, so a resumed run logs the same losses.
    state.setdefault("window_losses", [])
    state.setdefault("window_seconds", 0.0)
    while state["step"] < options.max_steps:
        step = state["step"]
        started = time.perf_counter()
        micro_batches = []
        for micro in range(accum):
            start = micro_batch_start(step, micro, rank, batch=batch, world=world, accumulation=accum)
            indices = stream_indices(start, batch, len(splits.train), options.seed)
            micro_batches.append({k: v.to(accelerator.device)
                                  for k, v in collator([splits.train[i] for i in indices]).items()})
        # Each micro-batch's loss is a mean over its own targets. Weighing it by its share of
        # all the step's targets (every micro-batch, every process) makes accumulation and N
        # processes give exactly the large batch's gradient, also when targets differ in length.
        weights = [loss_weight(b["labels"]) for b in micro_batches]
        total = accelerator.reduce(torch.tensor(float(sum(weights)), device=accelerator.device),
                                   reduction="sum").clamp(min=1)
        step_loss = torch.zeros((), device=accelerator.device)
        for micro, (inputs, weight) in enumerate(zip(micro_batches, weights)):
            sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
            with sync, accelerator.autocast():
                loss = model(**inputs, trim_logits=True).loss
                # DDP averages gradients over processes, hence the factor world.
                accelerator.backward(loss * (weight * world / total))
            step_loss += loss.detach() * weight
        if options.max_grad_norm:
            accelerator.clip_grad_norm_(trainable, options.max_grad_norm)
        lrs = {f"lr_{g['name']}": g["lr"] for g in optimizer.param_groups}  # the rates of this update
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - started
        state["step"] = step + 1
        state["examples"] += global_batch
        state["train_seconds"] += seconds
        state["window_seconds"] += seconds  # training time only: no evaluation or checkpoint
        state["window_losses"].append((accelerator.reduce(step_loss, reduction="sum") / total).item())

        step = state["step"]
        if step % options.logging_steps == 0 or step == options.max_steps:
            window = state["window_losses"]
            record = {"step": step, "loss": sum(window) / len(window), **lrs,
                      "examples_per_second": len(window) * global_batch / max(state["window_seconds"], 1e-9)}
            log.append(record)
            progress.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{record['examples_per_second']:.1f}",
                                 **{k: f"{v:.1e}" for k, v in lrs.items()})
            state["window_losses"], state["window_seconds"] = [], 0.0
        progress.update(1)
        if step % options.eval_steps == 0 or step == options.max_steps:
            validate(step)
            model.train()
        if step % options.save_steps == 0 or step == options.max_steps:
            save_checkpoint(out, model=plain, optimizer=optimizer, scheduler=scheduler, trainer_state=state,
                            rank=rank, is_main=main, barrier=accelerator.wait_for_everyone)
    progress.close()
    results = finish(options, out, plain, splits, state, log, run_eval, main, accelerator)
    if main:
        results["wall_seconds"] = round(time.perf_counter() - wall_start, 2)
        results["learning_rates"] = learning_rates
        records.write_results(out / records.RESULTS, results)
    return results


def finish(options, out: Path, plain, splits: Splits, state: dict, log, run_eval, main, accelerator) -> dict:
    """Restore the best tensors, score the test split, write results.json and curves.png."""
    results = {}
    if main:
        best_file = out / records.BEST_TENSORS
        if best_file.is_file():
            params = dict(plain.named_parameters())
            with torch.no_grad():
                for name, value in load_file(str(best_file)).items():
                    params[name].copy_(value)
        test_metrics = run_eval(splits.test) if splits.test else {}
        if test_metrics:
            log.append({"step": state["best_step"], "split": "test", **test_metrics})
        history = log.read()
        validation = [r for r in history if r.get("split") == "validation"]
        results = {
            "options": options.to_dict(),
            "task": splits.task_meta["task"],
            "main_metric": splits.main_metric,
            "before_training": state.get("before"),
            "best_step": state["best_step"],
            "best_validation": next((r for r in validation if r["step"] == state["best_step"]), None),
            "test": test_metrics,
            "trainable_params": count_trainable(plain),
            "train_examples": len(splits.train),
            "steps": state["step"],
            "train_seconds": round(state["train_seconds"], 2),
            "train_examples_per_second": round(state["examples"] / max(state["train_seconds"], 1e-9), 2),
            "processes": accelerator.num_processes,
        }
        records.write_results(out / records.RESULTS, results)
        records.plot_curves(history, splits.main_metric, out / records.CURVES)
    accelerator.wait_for_everyone()
    return results
