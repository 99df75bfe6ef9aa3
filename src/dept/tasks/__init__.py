"""Tasks as data: one table from task name to reader, template, target words and metrics.

    load_task("rte", "train", "/data/glue")        -> list[Example]
    compute_metrics("rte", predictions, examples)  -> {"accuracy": 0.71}

See docs/tasks.md for the tasks, file layouts and split protocols.
"""

from dept.tasks.api import candidate_targets, load_task
from dept.tasks.errors import TaskDataError, TaskError
from dept.tasks.meta import DECODERS, TaskMeta
from dept.tasks.metrics import QA_SCORINGS, compute_metrics, main_metric, qa_scoring_for
from dept.tasks.records import Example
from dept.tasks.registry import TASKS, HubSource, TaskSpec, get_task, is_builtin
from dept.tasks.sources import find_tasks

__all__ = [
    "DECODERS",
    "QA_SCORINGS",
    "TaskMeta",
    "TASKS",
    "Example",
    "HubSource",
    "TaskDataError",
    "TaskError",
    "TaskSpec",
    "candidate_targets",
    "compute_metrics",
    "find_tasks",
    "get_task",
    "load_task",
    "main_metric",
    "qa_scoring_for",
    "is_builtin",
]
