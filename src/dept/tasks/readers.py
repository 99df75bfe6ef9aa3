"""Readers for the official distribution files, one per file format.

Every reader turns one file into a list of records (see records.py) and fails
loudly, naming the file and the line, on anything it does not expect: a missing
file, a row with the wrong number of columns, a missing key, an unknown label.
Nothing is skipped and nothing is repaired.

TSV files are split on tabs with no quoting, as GLUE's own loaders do: GLUE text
contains bare double quotes (MRPC, SST-2) that a CSV reader would swallow.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from dept.tasks.errors import TaskDataError
from dept.tasks.records import Record, check_fields, parse_label, qa_record

if TYPE_CHECKING:
    from dept.tasks.registry import TaskSpec

_MISSING = object()


def read_file(spec: TaskSpec, path: Path) -> list[Record]:
    """All records of one official file of `spec`, in file order."""
    if not path.is_file():
        raise TaskDataError(f"file not found (task {spec.name!r})", path)
    return list(READERS[spec.reader](spec, path))


def _text(path: Path) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path) as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as err:  # a truncated or non-gzip .gz file
        raise TaskDataError(f"cannot read file: {err}", path) from None
    try:
        return raw.decode("utf-8-sig")  # -sig: MRPC's header starts with a byte-order mark
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise TaskDataError(f"not UTF-8 text ({err.reason})", path, line) from None


def _lines(path: Path) -> list[str]:
    # Split on "\n" only: a stray "\r" or "\x0b" inside a sentence is text, not a row break.
    lines = _text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last row (CoLA's dev.tsv has none)
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _get(obj: Any, dotted: str) -> Any:
    """obj["a"]["b"] for "a.b"; _MISSING if any step is absent."""
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _flat_record(spec: TaskSpec, row: dict, path: Path, where: Any) -> Record:
    record: Record = {}
    for field, column in spec.columns:
        value = _get(row, column)
        if value is _MISSING:
            raise TaskDataError(f"missing column or key {column!r} (task {spec.name!r})", path, where)
        record[field] = value
    check_fields(record, spec.field_names, path, where)
    label = _get(row, spec.label_column)
    if label is _MISSING:
        raise TaskDataError(f"missing label column or key {spec.label_column!r}", path, where)
    record["label"] = parse_label(spec, label, path, where)
    record["_where"] = f"{path}, line {where}"  # for warnings raised while formatting
    return record


# ---- delimited text --------------------------------------------------------------------


def _tsv_rows(spec: TaskSpec, path: Path) -> Iterator[tuple[int, dict]]:
    lines = _lines(path)
    if spec.names is not None:
        header, first = list(spec.names), 1
    else:
        if not lines:
            raise TaskDataError("file is empty; expected a header row", path, 1)
        header, first = lines[0].split("\t"), 2
        needed = [c for _, c in spec.columns] + [spec.label_column]
        absent = [c for c in needed if c not in header]
        if absent:
            raise TaskDataError(
                f"header lacks column(s) {absent}; expected {needed}, found {header}", path, 1
            )
    for number, line in enumerate(lines[first - 1 :], start=first):
        cells = line.split("\t")
        if len(cells) != len(header):
            raise TaskDataError(
                f"expected {len(header)} tab-separated columns ({', '.join(header)}), "
                f"found {len(cells)}",
                path,
                number,
            )
        yield number, dict(zip(header, cells))


def _csv_rows(spec: TaskSpec, path: Path) -> Iterator[tuple[int, dict]]:
    # Yelp: no header, every field in double quotes, "" for a quote inside a field.
    names = list(spec.names or ())
    reader = csv.reader(io.StringIO(_text(path), newline=""), strict=True)
    number = 0
    try:
        for cells in reader:
            number = reader.line_num
            if len(cells) != len(names):
                raise TaskDataError(
                    f"expected {len(names)} comma-separated fields ({', '.join(names)}), "
                    f"found {len(cells)}",
                    path,
                    number,
                )
            yield number, dict(zip(names, cells))
    except csv.Error as err:
        raise TaskDataError(f"malformed CSV: {err}", path, reader.line_num) from None


def read_delimited(spec: TaskSpec, path: Path) -> Iterator[Record]:
    rows = _csv_rows if spec.reader == "csv" else _tsv_rows
    for number, row in rows(spec, path):
        yield _flat_record(spec, row, path, number)


# ---- JSON ---------------------------------------------------------------------------


def jsonl_rows(path: Path, *, skip_blank: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, object) of a JSON Lines file; a blank line is an error unless `skip_blank`."""
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            if skip_blank:
                continue
            raise TaskDataError("empty line; expected one JSON object per line", path, number)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise TaskDataError(f"malformed JSON: {err.msg} (column {err.colno})", path, number) from None
        if not isinstance(obj, dict):
            raise TaskDataError(f"expected a JSON object, found {type(obj).__name__}", path, number)
        yield number, obj


def read_jsonl(spec: TaskSpec, path: Path) -> Iterator[Record]:
    for number, obj in jsonl_rows(path):
        yield _flat_record(spec, obj, path, number)


def _need(obj: Any, key: str, kind: type, path: Path, where: Any, inside: str) -> Any:
    value = obj.get(key, _MISSING) if isinstance(obj, dict) else _MISSING
    if value is _MISSING or not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise TaskDataError(f"expected {inside}{key} to be a {kind.__name__}", path, where)
    return value


def read_multirc(spec: TaskSpec, path: Path) -> Iterator[Record]:
    """SuperGLUE MultiRC: passage -> questions -> answers; one record per answer option."""
    for number, obj in jsonl_rows(path):
        p_idx = _need(obj, "idx", int, path, number, "")
        passage = _need(obj, "passage", dict, path, number, "")
        text = _need(passage, "text", str, path, number, "passage.")
        for qi, question in enumerate(_need(passage, "questions", list, path, number, "passage.")):
            at = f"passage.questions[{qi}]."
            q_text = _need(question, "question", str, path, number, at)
            q_idx = _need(question, "idx", int, path, number, at)
            for ai, answer in enumerate(_need(question, "answers", list, path, number, at)):
                a_at = f"{at}answers[{ai}]."
                record = {
                    "paragraph": text,
                    "question": q_text,
                    "answer": _need(answer, "text", str, path, number, a_at),
                    # Question ids are unique only within a passage in some releases.
                    "group": f"{p_idx}-{q_idx}",
                }
                if "label" not in answer:
                    raise TaskDataError(f"missing key {a_at}label", path, number)
                record["label"] = parse_label(spec, answer["label"], path, number)
                yield record


def read_mrqa(spec: TaskSpec, path: Path) -> Iterator[Record]:
    """MRQA 2019 .jsonl.gz: a header line, then one context per line with its questions."""
    for number, obj in jsonl_rows(path):
        if number == 1:
            if "header" not in obj:
                raise TaskDataError('expected the MRQA header line {"header": ...}', path, number)
            continue
        context = obj.get("context")
        for qi, qa in enumerate(_need(obj, "qas", list, path, number, "")):
            if not isinstance(qa, dict):
                raise TaskDataError(f"expected qas[{qi}] to be an object", path, number)
            yield qa_record(qa.get("question"), context, qa.get("answers"), path, number)


def read_squad(spec: TaskSpec, path: Path) -> Iterator[Record]:
    """SQuAD v1.1 JSON: data -> paragraphs -> qas. No line numbers: items are named by position."""
    try:
        root = json.loads(_text(path))
    except json.JSONDecodeError as err:
        raise TaskDataError(f"malformed JSON: {err.msg}", path, err.lineno) from None
    for di, article in enumerate(_need(root, "data", list, path, "top level", "")):
        for pi, para in enumerate(_need(article, "paragraphs", list, path, f"data[{di}]", "")):
            where = f"data[{di}].paragraphs[{pi}]"
            context = _need(para, "context", str, path, where, "")
            for qi, qa in enumerate(_need(para, "qas", list, path, where, "")):
                at = f"{where}.qas[{qi}]"
                answers = _need(qa, "answers", list, path, at, "")
                texts = [a.get("text") if isinstance(a, dict) else None for a in answers]
                yield qa_record(qa.get("question"), context, texts, path, at)


READERS: dict[str, Callable[[TaskSpec, Path], Iterator[Record]]] = {
    "tsv": read_delimited,
    "csv": read_delimited,
    "jsonl": read_jsonl,
    "multirc": read_multirc,
    "mrqa": read_mrqa,
    "squad": read_squad,
}
