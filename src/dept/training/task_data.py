"""The examples a run trains, validates and tests on, and what the adapter records of its task."""

from __future__ import annotations

from dataclasses import dataclass

from ..tasks import (
    TaskDataError,
    TaskMeta,
    candidate_targets,
    get_task,
    load_task,
    main_metric,
)
from .options import TrainOptions


@dataclass
class TaskData:
    train: list
    validation: list
    test: list
    meta: TaskMeta
    """Saved with the adapter, so `dept eval` rebuilds the same splits and decodes the same way."""
    num_labels: int | None
    """Classes of a classification task, 1 for regression, None for extractive QA."""
    main_metric: str
    """The validation metric that picks the best checkpoint."""


def load_task_data(options: TrainOptions) -> TaskData:
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
    if not train:
        raise TaskDataError(f"task {spec.name}: the training split has no examples")
    candidates = candidate_targets(options.task, options.target_words)
    num_labels = len(candidates) if candidates else (1 if spec.kind == "regression" else None)
    meta = TaskMeta(task=spec.name, target_words=options.target_words, decoder=options.decoder,
                    protocol=options.protocol, seed=options.seed)
    return TaskData(train, validation, test, meta, num_labels, main_metric(options.task))
