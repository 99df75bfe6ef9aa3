"""The examples a run trains, validates and tests on, and what the adapter records of its task."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..tasks import (
    TaskDataError,
    TaskMeta,
    TaskSpec,
    candidate_targets,
    get_task,
    load_task,
    main_metric,
    qa_scoring_for,
)
from .options import TrainOptions

log = logging.getLogger("dept")


@dataclass
class TaskData:
    train: list
    validation: list
    test: list
    spec: TaskSpec
    """The task: a built-in row, or the user's own task (never looked up by name)."""
    meta: TaskMeta
    """Saved with the adapter, so `dept eval` rebuilds the same splits and decodes the same way."""
    num_labels: int | None
    """Classes of a classification task, 1 for regression, None for extractive QA."""
    main_metric: str
    """The validation metric that picks the best checkpoint."""
    qa_scoring: str | None = None
    """Extractive QA: scored against the first gold answer or all of them (from the protocol);
    None for other tasks."""


def custom_task(options: TrainOptions):
    """The user's own task of the options (files and fields given as flags or a task file)."""
    from ..tasks.custom import CustomTask

    data = options.data
    fields = {name: getattr(data, name) for name in ("train_file", "validation_file", "test_file", "input_template",
                                                     "label_column", "task_type", "label_words", "metric",
                                                     "skip_bad_rows")}
    if data.task_file:
        return CustomTask.from_yaml(data.task_file, **fields)
    return CustomTask(**{k: v for k, v in fields.items() if v is not None})


def load_custom_task_data(options: TrainOptions) -> TaskData:
    task = custom_task(options)
    loaded = task.load()
    for note in loaded.notes:
        log.info("%s", note)
    spec, splits, data = loaded.spec, loaded.splits, options.data
    train, validation, test = splits["train"], splits["validation"], [] if options.evaluation.no_test else splits["test"]
    if data.k_shot_examples:
        from ..tasks.splits import k_shot_sample

        picked = k_shot_sample(spec, [{"label": e.label, "index": i} for i, e in enumerate(train)],
                               data.k_shot_examples, options.run.seed)
        train = [train[r["index"]] for r in picked]
    if data.max_train_samples:
        train = train[:data.max_train_samples]
    if data.max_eval_samples:
        validation, test = validation[:data.max_eval_samples], test[:data.max_eval_samples]
    candidates = candidate_targets(spec)
    num_labels = len(candidates) if candidates else (1 if spec.kind == "regression" else None)
    meta = TaskMeta(task=spec.name, target_words="natural", decoder=options.evaluation.decoder,
                    split_seed=data.split_seed, custom=task.description())
    return TaskData(train, validation, test, spec, meta, num_labels, spec.main_metric)


def load_task_data(options: TrainOptions) -> TaskData:
    if options.custom_task:
        return load_custom_task_data(options)
    task, data = options.run.task, options.data
    spec = get_task(task)
    common = dict(data_dir=data.data_dir, protocol=data.protocol, seed=data.split_seed,
                  target_words=data.target_words, from_hub=data.from_hub)
    train = load_task(task, "train", k_shot=data.k_shot_examples, k_shot_seed=options.run.seed, **common)
    validation = load_task(task, "validation", **common)
    test = [] if options.evaluation.no_test or data.protocol == "official" else load_task(task, "test", **common)
    if data.max_train_samples:
        train = train[:data.max_train_samples]
    if data.max_eval_samples:
        validation, test = validation[:data.max_eval_samples], test[:data.max_eval_samples]
    if not train:
        raise TaskDataError(f"task {spec.name}: the training split has no examples")
    candidates = candidate_targets(task, data.target_words)
    num_labels = len(candidates) if candidates else (1 if spec.kind == "regression" else None)
    meta = TaskMeta(task=spec.name, target_words=data.target_words, decoder=options.evaluation.decoder,
                    protocol=data.protocol, split_seed=data.split_seed)
    return TaskData(train, validation, test, spec, meta, num_labels, main_metric(spec),
                    qa_scoring_for(spec.name, data.protocol))
