"""Records and examples: the two shapes data takes on its way to a model.

A *record* is one row of a task as a plain dict whose keys are the task's field
names (the column names of the Hugging Face hub copy, so the file readers and the
hub converter meet in the middle) plus:

    "label"    class index (int), score (float), or None for extractive QA
    "answers"  extractive QA only: every gold answer, as a list of str
    "group"    MultiRC only: the question the answer option belongs to

An `Example` is a record formatted as text-to-text, ready for tokenisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dept.tasks.errors import TaskDataError

if TYPE_CHECKING:
    from dept.tasks.registry import TaskSpec

Record = dict[str, Any]

# Fields that hold word/character offsets rather than text (WSC, WiC).
INT_FIELDS = frozenset({"span1_index", "span2_index", "start1", "end1", "start2", "end2"})


@dataclass(frozen=True)
class Example:
    source: str  # formatted input text, e.g. "sentence1: ... sentence2: ..."
    target: str  # target text in the chosen target words, e.g. "entailment", "1" or "3.4"
    label: int | float | str  # gold label for metrics: class index, score, or answer text
    group: str | None = None  # MultiRC: question id, for the per-question metric
    answers: tuple[str, ...] = ()  # extractive QA: every gold answer


def label_key(value: Any) -> str:
    """The text a raw label is looked up by: JSON true -> "true", 1 -> "1"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value).strip()
    return repr(value)


def parse_label(spec: TaskSpec, value: Any, path: Any, where: Any, *, hub: bool = False) -> int | float:
    """Turn a label as written in a file (or the hub) into a class index or score.

    Hub copies store class indices (their ClassLabel order is the order of
    `spec.natural_words`); files store names or digits, looked up in
    `spec.file_labels` (Yelp's file digits "1"/"2" are not indices, hence the flag).
    """
    if spec.kind == "regression":
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = math.nan
        lo, hi = spec.score_range
        if not (lo <= score <= hi):  # also catches NaN
            raise TaskDataError(f"label {value!r} is not a number from {lo} to {hi}", path, where)
        return score
    if hub and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(spec.natural_words):
            raise TaskDataError(
                f"label {value} is not a class index 0..{len(spec.natural_words) - 1}", path, where
            )
        return value
    key = label_key(value)
    if key not in spec.file_labels:
        expected = ", ".join(repr(k) for k in spec.file_labels)
        raise TaskDataError(f"unknown label {value!r}; expected one of {expected}", path, where)
    return spec.file_labels[key]


def check_fields(record: Record, fields: tuple[str, ...], path: Any, where: Any) -> Record:
    """Fail on a missing field or one of the wrong type; text must be str."""
    for field in fields:
        if field not in record or record[field] is None:
            raise TaskDataError(f"missing field {field!r}", path, where)
        value = record[field]
        wanted = int if field in INT_FIELDS else str
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise TaskDataError(
                f"field {field!r} should be {wanted.__name__}, found {type(value).__name__} {value!r}",
                path,
                where,
            )
    return record


def qa_record(question: Any, context: Any, answers: Any, path: Any, where: Any) -> Record:
    """An extractive-QA record; every question needs at least one gold answer."""
    if not isinstance(question, str) or not isinstance(context, str):
        raise TaskDataError("expected a question and a context as text", path, where)
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise TaskDataError(f"expected a non-empty list of answer strings, found {answers!r}", path, where)
    return {"question": question, "context": context, "answers": list(answers), "label": None}
