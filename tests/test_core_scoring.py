"""Rank classification with the source encoded once equals scoring every (source, candidate) row."""

from __future__ import annotations

import pytest
import torch

from dept.data import IGNORE, pad_rows
from helpers_tiny import PAD, one_thread, pad, random_rows, randomise, tiny_dept  # noqa: F401

CANDIDATES = [[7, 1], [9, 4, 1], [5, 1]]  # different lengths on purpose


def full_row_scores(model, sources: list[list[int]], side: str) -> torch.Tensor:
    """(B, C) via model.score on one row per (source, candidate), the straightforward way."""
    rows, labels, source_mask, targets = [], [], [], []
    for src in sources:
        for cand in CANDIDATES:
            if model.family.labels_in_input:
                rows.append(src + cand)
                labels.append([IGNORE] * len(src) + cand)
                source_mask.append([1] * len(src) + [0] * len(cand))
            else:
                rows.append(src)
                targets.append(cand)
    ids, mask = pad(rows, side)
    if model.family.labels_in_input:
        batch = dict(labels=pad_rows(labels, IGNORE, side), source_mask=pad_rows(source_mask, 0, side))
    else:
        batch = dict(labels=pad_rows(targets, IGNORE, "right"))
    return model.score(ids, mask, **batch).view(len(sources), len(CANDIDATES))


@pytest.mark.parametrize("family", ["causal", "seq2seq"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_shared_source_scoring_equals_full_rows(family, side):
    model = tiny_dept(family, m=3, r=2, s=16)
    sources = random_rows([5, 9, 2, 7], seed=3)
    ids, mask = pad(sources, side)
    shared = model.score_candidates(ids, mask, CANDIDATES)
    expected = full_row_scores(model, sources, side)
    assert shared.shape == (4, len(CANDIDATES))
    assert torch.allclose(shared, expected, atol=1e-4), (shared, expected)


def test_shared_source_scoring_with_mixed_adapters():
    model = tiny_dept("causal", m=3, r=2, s=16)
    model.add_adapter("other", model.dept_adapters["default"].config.__class__(
        prompt_length=1, rank=4, max_length=16, prompt_init="random", seed=5))
    randomise(model, "other", seed=9)
    sources = random_rows([6, 3, 8], seed=4)
    ids, mask = pad(sources, "left")
    names = ["default", "other", "other"]
    mixed = model.score_candidates(ids, mask, CANDIDATES, adapter_names=names)
    for row, name in enumerate(names):
        model.set_active_adapter(name)
        alone = full_row_scores(model, [sources[row]], "left")[0]
        assert torch.allclose(mixed[row], alone, atol=1e-4)


def test_encoders_have_nothing_to_score():
    model = tiny_dept("encoder")
    ids, mask = pad(random_rows([4]), "right")
    with pytest.raises(ValueError, match="head"):
        model.score_candidates(ids, mask, CANDIDATES)
