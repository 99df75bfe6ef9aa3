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

    fields = dict(train_file=options.data.train_file, validation_file=options.data.validation_file,
                  test_file=options.data.test_file, input_template=options.data.input_template,
                  label_column=options.data.label_column, task_type=options.data.task_type,
                  label_words=options.data.label_words, metric=options.data.metric, skip_bad_rows=options.data.skip_bad_rows)
    if options.data.task_file:
        return CustomTask.from_yaml(options.data.task_file, **fields)
    return CustomTask(**{k: v for k, v in fields.items() if v is not None})


def load_custom_task_data(options: TrainOptions) -> TaskData:
    task = custom_task(options)
    loaded = task.load()
    for note in loaded.notes:
        log.info("%s", note)
    spec, splits = loaded.spec, loaded.splits
    train, validation, test = splits["train"], splits["validation"], [] if options.evaluation.no_test else splits["test"]
    if options.data.k_shot_examples:
        from ..tasks.splits import k_shot_sample

        picked = k_shot_sample(spec, [{"label": e.label, "index": i} for i, e in enumerate(train)],
                               options.data.k_shot_examples, options.run.seed)
        train = [train[r["index"]] for r in picked]
    if options.data.max_train_samples:
        train = train[:options.data.max_train_samples]
    if options.data.max_eval_samples:
        validation, test = validation[:options.data.max_eval_samples], test[:options.data.max_eval_samples]
    candidates = candidate_targets(spec)
    num_labels = len(candidates) if candidates else (1 if spec.kind == "regression" else None)
    meta = TaskMeta(task=spec.name, target_words="natural", decoder=options.evaluation.decoder, split_seed=options.data.split_seed,
                    custom=task.description())
    return TaskData(train, validation, test, spec, meta, num_labels, spec.main_metric)


def load_task_data(options: TrainOptions) -> TaskData:
    if options.custom_task:
        return load_custom_task_data(options)
    spec = get_task(options.run.task)
    common = dict(data_dir=options.data.data_dir, protocol=options.data.protocol, seed=options.data.split_seed,
                  target_words=options.data.target_words, from_hub=options.data.from_hub)
    train = load_task(options.run.task, "train", k_shot=options.data.k_shot_examples, k_shot_seed=options.run.seed, **common)
    validation = load_task(options.run.task, "validation", **common)
    test = [] if options.evaluation.no_test or options.data.protocol == "official" else load_task(options.run.task, "test", **common)
    if options.data.max_train_samples:
        train = train[:options.data.max_train_samples]
    if options.data.max_eval_samples:
        validation, test = validation[:options.data.max_eval_samples], test[:options.data.max_eval_samples]
    if not train:
        raise TaskDataError(f"task {spec.name}: the training split has no examples")
    candidates = candidate_targets(options.run.task, options.data.target_words)
    num_labels = len(candidates) if candidates else (1 if spec.kind == "regression" else None)
    meta = TaskMeta(task=spec.name, target_words=options.data.target_words, decoder=options.evaluation.decoder,
                    protocol=options.data.protocol, split_seed=options.data.split_seed)
    return TaskData(train, validation, test, spec, meta, num_labels, main_metric(spec),
                    qa_scoring_for(spec.name, options.data.protocol))
