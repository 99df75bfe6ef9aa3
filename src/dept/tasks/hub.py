"""The same tasks from the Hugging Face hub, converted to the records the file readers give.

The hub copies name their columns as our record fields do and store labels as
class indices in our class order, so conversion is mostly a copy plus checks.
The differences are handled here, one line each: MRQA keeps all six training sets
in one dataset (filter on "subset"), SQuAD nests answer texts, MultiRC names its
question by a dict of ids, and the Yelp copy keeps the CSV's doubled quotes.

Only `load_hub_records` touches the network; the conversion is tested offline on
`datasets.Dataset` objects built locally.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dept.tasks.errors import TaskDataError, TaskError
from dept.tasks.records import Record, check_fields, parse_label, qa_record

if TYPE_CHECKING:
    from dept.tasks.registry import TaskSpec


def load_hub_records(spec: TaskSpec, split: str) -> list[Record]:
    """Download one official split of `spec` with `datasets` and convert it."""
    if spec.hub is None:
        raise TaskError(f"task {spec.name!r} has no hub copy; pass data_dir")
    import datasets  # heavy; only needed here

    dataset = datasets.load_dataset(spec.hub.path, spec.hub.config, split=split)
    return records_from_rows(spec, dataset, origin=f"hub {spec.hub.path}/{spec.hub.config} {split}")


def records_from_rows(spec: TaskSpec, rows: Iterable[dict[str, Any]], origin: str = "hub") -> list[Record]:
    """Convert hub rows (a `datasets.Dataset` or any iterable of dicts) to records."""
    hub = spec.hub
    if hub is None:
        raise TaskError(f"task {spec.name!r} has no hub copy")
    records = []
    for i, row in enumerate(rows):
        where = f"row {i}"
        if spec.kind == "extractive_qa":
            if hub.subset is not None and row.get("subset") != hub.subset:
                continue  # MRQA: rows of the other five datasets
            answers = row.get("answers")
            if isinstance(answers, dict):  # SQuAD: {"text": [...], "answer_start": [...]}
                answers = answers.get("text")
            records.append(qa_record(row.get("question"), row.get("context"), list(answers or []), origin, where))
            continue
        record = {f: row.get(f) for f in spec.field_names}
        if hub.unescape_csv_quotes:
            record = {f: v.replace('""', '"').strip() for f, v in record.items()}
        check_fields(record, spec.field_names, origin, where)
        if hub.label_column not in row:
            raise TaskDataError(f"missing label column {hub.label_column!r}", origin, where)
        record["label"] = parse_label(spec, row[hub.label_column], origin, where, hub=True)
        if spec.reader == "multirc":
            idx = row.get("idx") or {}
            record["group"] = f"{idx.get('paragraph')}-{idx.get('question')}"
        record["_where"] = f"{origin}, {where}"
        records.append(record)
    return records
