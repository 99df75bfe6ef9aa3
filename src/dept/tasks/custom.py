"""Your own task from files: CSV, TSV, JSON Lines, JSON or Parquet, a template, labels, a metric.

    CustomTask(train_file="my.csv", input_template="review: {text}", label_column="y")
      .load()  -> LoadedTask(spec, {"train": [...], "validation": [...], "test": [...]}, notes)

Files are read by pandas (CSV, TSV, Parquet) and the json module (JSON Lines, JSON), so a
bad row is named by file and line. The task becomes a TaskSpec that training, evaluation and
the metrics take like a built-in task's; its description (without the file names) travels in
the adapter, so `dept eval`, `dept predict` and `dept serve` rebuild the same spec and read new
files or raw records the same way. Nothing is registered by name: two adapters of two tasks
that share a name each keep their own.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dept.options import read_yaml_mapping
from dept.tasks.errors import TaskDataError, TaskError
from dept.tasks.readers import jsonl_rows
from dept.tasks.records import Example
from dept.tasks.registry import TaskSpec, is_builtin
from dept.tasks.templates import format_record, template_fields

TASK_TYPES = ("classification", "regression", "generation")
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
DEFAULT_METRICS = {"classification": ("accuracy", "f1_macro"), "regression": ("pearson", "spearman"),
                   "generation": ("rougeL", "em", "f1")}
# Labels with at most this many distinct values are classes when the type is not given.
MAX_INFERRED_CLASSES = 20
VALIDATION_FRACTION = 0.1
SPLIT_SEED = 42
SHOWN_BAD_ROWS = 5


@dataclass
class CustomTask:
    """A user's task. Files are paths; everything else is what the adapter remembers."""

    input_template: str
    """Python format string whose fields name columns: "premise: {premise} hypothesis: {hypothesis}"."""
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    name: str = "custom"
    label_column: str = "label"
    task_type: str | None = None
    """classification, regression or generation; None: inferred from the training labels."""
    label_words: dict[str, str] | None = None
    """Label value (as text) -> what the model should say; default: the value itself."""
    metric: str | None = None
    """Main metric; default per type (accuracy, pearson, rougeL)."""
    labels: list[str] | None = None
    """Classification: the label values in class order (fixed once training has seen them)."""
    skip_bad_rows: bool = False

    def __post_init__(self) -> None:
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise TaskError(f"task_type must be one of {list(TASK_TYPES)}, got {self.task_type!r}")
        if isinstance(self.label_words, str):
            self.label_words = parse_label_words(self.label_words)
        self.fields = template_fields(self.input_template)
        if is_builtin(self.name):
            raise TaskError(f"task name {self.name!r} is a built-in task; give your task another name")

    # ----- what the adapter keeps --------------------------------------------------------
    def description(self) -> dict:
        """Everything but the files: saved in the adapter's task record."""
        record = asdict(self)
        for key in ("train_file", "validation_file", "test_file", "skip_bad_rows"):
            record.pop(key)
        return record

    @classmethod
    def from_description(cls, record: dict, **files) -> "CustomTask":
        return cls(**{**record, **files})

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "CustomTask":
        """A task file: the same fields as YAML; file paths are relative to the file's folder."""
        file = Path(path)
        record = read_yaml_mapping(file, None, TaskDataError, "task fields")
        known = {f for f in cls.__dataclass_fields__ if f != "labels"}
        unknown = sorted(set(record) - known)
        if unknown:
            raise TaskDataError(f"unknown field(s) {unknown}; known: {sorted(known)}", file)
        if "input_template" not in record and "input_template" not in overrides:
            raise TaskDataError("missing field 'input_template'", file)
        for key in ("train_file", "validation_file", "test_file"):
            if record.get(key):
                record[key] = str((file.parent / record[key]).resolve()) if not Path(record[key]).is_absolute() \
                    else record[key]
        if isinstance(record.get("label_words"), dict):
            record["label_words"] = {str(k): str(v) for k, v in record["label_words"].items()}
        return cls(**{**record, **{k: v for k, v in overrides.items() if v is not None}})

    def spec(self) -> TaskSpec:
        """The TaskSpec of this task (task_type and labels must be known)."""
        kind = self.task_type
        metrics = DEFAULT_METRICS[kind]
        main = self.metric or metrics[0]
        if main not in metrics:
            raise TaskError(f"metric {main!r} does not fit a {kind} task; choose from {list(metrics)}")
        extra: dict[str, Any] = {}
        if kind == "classification":
            words = [(self.label_words or {}).get(v, v) for v in self.labels]
            extra = dict(natural_words=tuple(words), file_labels={v: i for i, v in enumerate(self.labels)})
        elif kind == "regression" and self.labels:
            extra = dict(score_range=(float(self.labels[0]), float(self.labels[1])))
        columns = tuple((f, f) for f in dict.fromkeys(self.fields))
        return TaskSpec(self.name, "custom", kind, (), {}, "custom", (), (main, *[m for m in metrics if m != main]),
                        "official", columns=columns, input_template=self.input_template, main_metric=main, **extra)

    # ----- reading ------------------------------------------------------------------------
    def load(self) -> "LoadedTask":
        if not self.train_file:
            raise TaskError("a custom task needs train_file")
        notes: list[str] = []
        train_rows = self._read(self.train_file, notes)
        self._settle_type_and_labels(train_rows, notes)
        if self.validation_file:
            validation_rows = self._read(self.validation_file, notes)
        else:
            train_rows, validation_rows = _cut(train_rows, VALIDATION_FRACTION, SPLIT_SEED)
            notes.append(f"no validation_file: {len(validation_rows)} of the training rows (seed {SPLIT_SEED}) "
                         f"are the validation split")
        if self.test_file:
            test_rows = self._read(self.test_file, notes)
        else:
            test_rows = validation_rows
            notes.append("no test_file: the validation split is also the test split")
        spec = self.spec()
        splits = {name: [self._example(spec, row) for row in rows]
                  for name, rows in (("train", train_rows), ("validation", validation_rows), ("test", test_rows))}
        return LoadedTask(spec, splits, notes)

    def read_split(self, path: str) -> list[Example]:
        """One file as Examples of this (already trained) task: for `dept eval --test_file`."""
        return [self._example(self.spec(), row) for row in self._read(path, [])]

    def _read(self, path: str, notes: list[str]) -> list[dict]:
        rows = read_rows(path)
        if not rows:
            raise TaskDataError("the file has no rows", path)
        good, bad = [], []
        for where, row in rows:
            problem = self._problem(row)
            if problem is None:
                good.append((where, row))
            elif self.skip_bad_rows:
                bad.append(where)
            else:
                raise TaskDataError(problem, path, where)
        if bad:
            shown = ", ".join(str(b) for b in bad[:SHOWN_BAD_ROWS]) + (", ..." if len(bad) > SHOWN_BAD_ROWS else "")
            notes.append(f"{path}: skipped {len(bad)} bad row(s) (lines {shown})")
        if not good:
            raise TaskDataError("no usable rows", path)
        return [dict(row, _where=f"{path}, line {where}") for where, row in good]

    def _problem(self, row: dict) -> str | None:
        missing = [f for f in self.fields if f not in row]
        if missing:
            return f"missing column(s) {missing} that input_template names (columns: {sorted(row)})"
        if all(_text(row[f]).strip() == "" for f in self.fields):
            return f"empty input (columns {self.fields} are all empty)"
        if self.label_column not in row:
            return f"no label column {self.label_column!r} (columns: {sorted(row)}); set label_column"
        if _text(row[self.label_column]).strip() == "":
            return f"empty label in column {self.label_column!r}"
        return None

    def _settle_type_and_labels(self, rows: list[dict], notes: list[str]) -> None:
        values = [_text(r[self.label_column]).strip() for r in rows]
        distinct = sorted(set(values), key=_label_order)
        if self.task_type is None:
            numbers = [_number(v) for v in values]
            if all(n is not None for n in numbers) and any(n != int(n) for n in numbers):
                self.task_type = "regression"
            elif len(distinct) <= MAX_INFERRED_CLASSES:
                self.task_type = "classification"
            else:
                self.task_type = "generation"
            notes.append(f"task_type inferred from {len(values)} training labels ({len(distinct)} distinct): "
                         f"{self.task_type}")
        if self.task_type == "classification" and self.labels is None:
            self.labels = distinct
        if self.task_type == "regression":
            numbers = [_number(v) for v in values]
            if any(n is None for n in numbers):
                bad = next(r for r, n in zip(rows, numbers) if n is None)
                raise TaskDataError(f"label {bad[self.label_column]!r} is not a number (task_type regression)",
                                    bad["_where"])
            self.labels = [f"{min(numbers):g}", f"{max(numbers):g}"]

    def _example(self, spec: TaskSpec, row: dict) -> Example:
        value = _text(row[self.label_column]).strip()
        record = {f: _text(row[f]) for f in self.fields}
        if self.task_type == "classification":
            if value not in spec.file_labels:
                raise TaskDataError(f"label {value!r} never appears in the training file "
                                    f"(labels: {list(spec.file_labels)})", row["_where"])
            record["label"] = spec.file_labels[value]
        elif self.task_type == "regression":
            number = _number(value)
            if number is None:
                raise TaskDataError(f"label {value!r} is not a number", row["_where"])
            record["label"] = number
        else:
            record["label"] = value
        try:
            return format_record(spec, record)
        except (KeyError, ValueError, IndexError) as err:
            raise TaskDataError(f"input_template cannot be filled ({err})", row["_where"]) from None


@dataclass
class LoadedTask:
    spec: TaskSpec
    splits: dict[str, list[Example]]
    notes: list[str] = field(default_factory=list)


def parse_label_words(text: str) -> dict[str, str]:
    """'0=negative,1=positive' -> {'0': 'negative', '1': 'positive'}."""
    words = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        value, sep, word = part.partition("=")
        if not sep or not value.strip() or not word.strip():
            raise TaskError(f"label_words {text!r}: expected value=word pairs separated by commas")
        words[value.strip()] = word.strip()
    return words


def read_rows(path: str) -> list[tuple[int, dict]]:
    """(line or row number, row) of a data file, by its extension."""
    file = Path(path)
    kind = FORMATS.get(file.suffix.lower())
    if kind is None:
        raise TaskDataError(f"unknown file type {file.suffix!r}; use one of {sorted(FORMATS)}", path)
    if not file.is_file():
        raise TaskDataError("no such file", path)
    if kind in ("jsonl", "json"):
        return _read_json(file, kind)
    import pandas as pd

    try:
        if kind == "parquet":
            frame = pd.read_parquet(file)
            first = 0  # Parquet has no lines: rows count from 1
        else:
            frame = pd.read_csv(file, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False,
                                encoding="utf-8-sig")
            first = 1  # line 1 is the header
    except pd.errors.EmptyDataError:
        raise TaskDataError("the file is empty", path) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        raise TaskDataError(f"cannot parse it ({str(err).strip().splitlines()[0]})", path) from None
    return [(first + i + 1, {str(k): v for k, v in row.items()}) for i, row in enumerate(frame.to_dict("records"))]


def _read_json(file: Path, kind: str) -> list[tuple[int, dict]]:
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TaskDataError("not UTF-8 text", file) from None
    if kind == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise TaskDataError(f"invalid JSON ({err.msg})", file, err.lineno) from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise TaskDataError("expected a JSON list of objects (or {\"data\": [...]})", file)
        return [(i + 1, r) for i, r in enumerate(data)]
    return list(jsonl_rows(file, skip_blank=True))


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value == int(value):
        return str(int(value))  # a Parquet/JSON 1.0 label means class "1"
    return str(value)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _label_order(value: str):
    number = _number(value)
    return (0, number, value) if number is not None else (1, 0.0, value)


def _cut(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = max(1, round(len(rows) * fraction))
    if len(rows) < 2:
        raise TaskDataError("a training file of one row cannot also give a validation split; add validation_file")
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]
