"""The task layer's entry points: load a split as Examples, list target words."""

from __future__ import annotations

from pathlib import Path

from dept.tasks.errors import TaskError
from dept.tasks.records import Example
from dept.tasks.registry import get_task
from dept.tasks.sources import official_records
from dept.tasks.splits import PROTOCOLS, k_shot_sample, official_split, paper_split
from dept.tasks.templates import check_target_words, class_targets, format_record


def load_task(
    name: str,
    split: str,
    data_dir: str | Path | None = None,
    *,
    protocol: str = "paper",
    seed: int = 42,
    k_shot_seed: int | None = None,
    k_shot: int | None = None,
    target_words: str = "natural",
    from_hub: bool = False,
) -> list[Example]:
    """One split of a task as text-to-text Examples.

    split: "train", "validation" or "test" (under protocol="official", also MNLI's
    "validation_matched" / "validation_mismatched"). protocol="paper" builds the
    paper's splits from labelled data with `seed` (k_shot draws with `k_shot_seed`, default
    `seed`); "official" returns the files as
    distributed (no test split where its labels are hidden). k_shot draws k rows in
    total, balanced across classes, from the split. data_dir is the folder of the
    official download (suite or task folder); the demo task defaults to its packaged
    files; from_hub=True reads the same records from the Hugging Face hub instead.
    """
    spec = get_task(name)
    check_target_words(target_words)
    if protocol not in PROTOCOLS:
        raise TaskError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")

    def load(official: str):
        return official_records(spec, official, data_dir, from_hub)

    if protocol == "official":
        records = official_split(spec, split, load)
    else:
        records = paper_split(spec, split, load, seed)
    if k_shot is not None:
        records = k_shot_sample(spec, records, k_shot, seed if k_shot_seed is None else k_shot_seed)
    return [format_record(spec, record, target_words) for record in records]


def candidate_targets(name: str, target_words: str = "natural") -> list[str] | None:
    """The valid target strings of a classification task (for rank classification),
    in class-index order; None for regression and extractive QA."""
    spec = get_task(name)
    if spec.kind != "classification":
        check_target_words(target_words)
        return None
    return class_targets(spec, target_words)
