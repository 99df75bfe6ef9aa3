"""What an adapter remembers of the task it was trained on, with one set of defaults.

Stored in the adapter's `task` record (adapter_config.json), read back by `dept eval`,
`dept predict` and the server, so they rebuild the same splits and read answers the
same way without the user repeating the training options.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from dept.tasks.custom import CustomTask
from dept.tasks.errors import TaskError
from dept.tasks.registry import TaskSpec, get_task
from dept.tasks.splits import PROTOCOLS
from dept.tasks.templates import TARGET_WORDS

# How a generative model's answer is read: rank the task's candidate targets by
# log-likelihood, or decode greedily (the paper).
DECODERS = ("rank", "generate")
DEFAULT_SPLIT_SEED = 42


@dataclass
class TaskMeta:
    task: str | None = None
    """Name in the task table; None for an adapter saved outside `dept train`."""
    target_words: str = "natural"
    """Label words: the natural words of each class, or the reference's label indices."""
    decoder: str = "rank"
    """How answers are read (DECODERS)."""
    protocol: str = "paper"
    """How splits were built (PROTOCOLS); it also picks how QA answers are scored (tasks.metrics)."""
    split_seed: int = DEFAULT_SPLIT_SEED
    """Seed the paper-protocol validation/test splits were cut with (42, as the reference, unless
    the run said otherwise)."""
    custom: dict | None = None
    """A user's own task (tasks/custom.py): its template, label column and words, type, metric
    and labels, so new files and raw records are read as training read them."""

    def __post_init__(self) -> None:
        for name, value, allowed in (("target_words", self.target_words, TARGET_WORDS),
                                     ("decoder", self.decoder, DECODERS), ("protocol", self.protocol, PROTOCOLS)):
            if value not in allowed:
                raise TaskError(f"task metadata {name}: must be one of {list(allowed)}, got {value!r}")

    def spec(self) -> TaskSpec | None:
        """The task these records describe: the user's own task rebuilt from its description, or the
        built-in row by name; None for an adapter that names no task."""
        if self.custom:
            return CustomTask.from_description(self.custom).spec()
        return get_task(self.task) if self.task else None

    def to_dict(self) -> dict:
        record = asdict(self)
        if record["custom"] is None:
            del record["custom"]  # built-in tasks: the adapter's record stays as it was
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "TaskMeta":
        """Known keys only: an adapter's task record may carry more (written by other tools)."""
        known = {f.name for f in fields(cls)}
        if "seed" in record and "split_seed" not in record:  # dept 0.1 cut splits with the training seed
            record = {**record, "split_seed": record["seed"]}
        return cls(**{k: v for k, v in record.items() if k in known and v is not None})
