"""Train / validation / test: the official splits, the paper's protocol, and k-shot samples.

The paper's protocol (see registry.py for which task gets which):
    halve    train = official train; the official validation set, shuffled with the
             seed, is cut in half: first half validation, second half test
    holdout  the official train, shuffled with the seed: first 1,000 rows validation,
             the rest train; test = official validation (or the labelled official test)
    mnli     train; validation = validation_mismatched; test = validation_matched
    official train / validation / test as distributed

Shuffling uses torch.randperm with a generator seeded by `seed`, as the reference
code does, so that with the same seed and the same file order the splits are the
reference's. MultiRC is the exception: it is split by question, never inside one.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

from dept.tasks.errors import TaskError
from dept.tasks.records import Record
from dept.tasks.registry import TaskSpec

SPLITS = ("train", "validation", "test")
PROTOCOLS = ("paper", "official")
HOLDOUT_SIZE = 1000  # validation rows taken from a large training set

Loader = Callable[[str], Sequence[Record]]  # official split name -> its records


def permutation(n: int, seed: int) -> list[int]:
    import torch  # the reference's generator; imported here so listing tasks stays light

    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).tolist()


def official_split(spec: TaskSpec, split: str, load: Loader) -> list[Record]:
    """An official split; "validation" of MNLI is validation_matched."""
    key = split
    if split == "validation" and "validation" not in spec.files and "validation_matched" in spec.files:
        key = "validation_matched"
    if key not in spec.files:
        if split == "test":
            raise TaskError(
                f"task {spec.name!r} has no labelled official test split (its test labels are "
                f"hidden); use protocol='paper', which builds a test split from labelled data"
            )
        raise TaskError(f"task {spec.name!r} has no official split {split!r}; it has {list(spec.files)}")
    return list(load(key))


def _halves(records: Sequence[Record], seed: int) -> tuple[list[Record], list[Record]]:
    if records and records[0].get("group") is not None:
        # MultiRC: shuffle questions, keep each question's answer options together.
        groups: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            groups[record["group"]].append(record)
        keys = list(groups)
        order = [keys[i] for i in permutation(len(keys), seed)]
        half = len(order) // 2
        return [r for k in order[:half] for r in groups[k]], [r for k in order[half:] for r in groups[k]]
    order = permutation(len(records), seed)
    half = len(records) // 2
    return [records[i] for i in order[:half]], [records[i] for i in order[half:]]


def paper_split(spec: TaskSpec, split: str, load: Loader, seed: int) -> list[Record]:
    """One split of the paper's protocol."""
    if split not in SPLITS:
        raise TaskError(f"split must be one of {SPLITS} under protocol 'paper', not {split!r}")
    how = spec.paper_split
    if how == "official" or (split == "train" and how in ("halve", "mnli")):
        return official_split(spec, split, load)
    if how == "mnli":
        return list(load("validation_mismatched" if split == "validation" else "validation_matched"))
    if how == "halve":
        validation, test = _halves(load("validation"), seed)
        return validation if split == "validation" else test
    # holdout
    if split == "test":
        return list(load("validation" if "validation" in spec.files else "test"))
    train = load("train")
    if len(train) <= HOLDOUT_SIZE:
        raise TaskError(
            f"task {spec.name!r}: the paper's protocol holds out {HOLDOUT_SIZE} training rows "
            f"for validation, but the training set has only {len(train)}"
        )
    order = permutation(len(train), seed)
    chosen = order[:HOLDOUT_SIZE] if split == "validation" else order[HOLDOUT_SIZE:]
    return [train[i] for i in chosen]


def k_shot_sample(spec: TaskSpec, records: Sequence[Record], k: int, seed: int) -> list[Record]:
    """k records in total, balanced across classes, in a seeded random order.

    Each class gets k // C records and a seeded random choice of classes gets one
    more when C does not divide k. Regression and QA tasks get a plain random k.
    """
    import numpy as np

    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise TaskError(f"k_shot must be a positive integer, not {k!r}")
    if k > len(records):
        raise TaskError(f"k_shot={k} but the split has only {len(records)} rows (task {spec.name!r})")
    rng = np.random.default_rng(seed)
    if spec.kind != "classification":
        return [records[i] for i in rng.choice(len(records), size=k, replace=False)]
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, record in enumerate(records):
        by_class[record["label"]].append(i)
    classes = list(range(spec.num_classes))
    quota = {c: k // len(classes) for c in classes}
    for c in rng.permutation(classes)[: k % len(classes)]:
        quota[int(c)] += 1
    chosen: list[int] = []
    for c in classes:
        pool = by_class.get(c, [])
        if quota[c] > len(pool):
            raise TaskError(
                f"k_shot={k} needs {quota[c]} rows of class {spec.natural_words[c]!r} "
                f"but the split has {len(pool)} (task {spec.name!r})"
            )
        chosen += rng.choice(pool, size=quota[c], replace=False).tolist() if quota[c] else []
    return [records[i] for i in rng.permutation(chosen)]
