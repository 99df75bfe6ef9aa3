"""Batches: a padded batch equals each example alone (either padding side), a mixed-adapter
batch equals each adapter alone, and inputs longer than s are truncated or refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers_tiny import FAMILIES, dept_config, pad, pad_like, randomise, random_rows, tiny_base, tiny_dept
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)

from dept.model import DeptModel, InputTooLongError

ATOL = 1e-5
# A padded batch against each row alone: float32 sums in another order. With transformers 5.24
# T5 differs by 5e-5 at logits of ~3 (3e-14 in float64); a masking or position bug is ~0.1.
BATCH_ATOL = 1e-4


def make_rows(family: str, source_lengths: list[int], seed: int = 0) -> list[tuple]:
    """(source, target) token lists; an encoder's target is a class index."""
    sources = random_rows(source_lengths, seed=seed)
    if family == "encoder":
        return [(s, i % 2) for i, s in enumerate(sources)]
    targets = random_rows([2 + i % 3 for i in range(len(sources))], seed=seed + 1)
    return list(zip(sources, targets))


def per_row(model: DeptModel, family: str, rows: list[tuple], side: str = "right",
            names: list[str] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run `rows` as one padded batch; per row (logits at its real positions, its own loss)."""
    results = []
    if family == "causal":
        ids, mask = pad([s + t for s, t in rows], side)
        kwargs = {"labels": pad_like([[-100] * len(s) + t for s, t in rows], mask, -100),
                  "source_mask": pad_like([[1] * len(s) + [0] * len(t) for s, t in rows], mask, 0)}
        out = model(ids, mask, adapter_names=names, **kwargs)
        # With the shared prefix (decoder-only default) the logits and labels cover the input
        # tokens only and the mask starts with the prompt cache's columns: take its last n.
        laid = model.prepare_inputs(ids, mask, adapter_names=names, shared=model.uses_shared_prefix(names),
                                    **kwargs)
        n = out.logits.shape[1]
        for b in range(len(rows)):
            real = laid["attention_mask"][b, -n:].bool()                       # the row's slots
            logits, labels = out.logits[b][real], laid["labels"][b][real]
            results.append((logits, F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100)))
    elif family == "seq2seq":
        ids, mask = pad([s for s, _ in rows], side)
        labels, _ = pad([t for _, t in rows], "right", value=-100)
        out = model(ids, mask, labels=labels, adapter_names=names)
        for b, (_, t) in enumerate(rows):
            logits = out.logits[b, :len(t)]
            results.append((logits, F.cross_entropy(logits, torch.tensor(t))))
    else:
        ids, mask = pad([s for s, _ in rows], side)
        out = model(ids, mask, adapter_names=names)
        for b, (_, y) in enumerate(rows):
            results.append((out.logits[b], F.cross_entropy(out.logits[b:b + 1], torch.tensor([y]))))
    return results


def assert_same(got, want):
    for (logits, loss), (logits_ref, loss_ref) in zip(got, want, strict=True):
        assert logits.shape == logits_ref.shape
        assert torch.allclose(logits, logits_ref, atol=BATCH_ATOL), (logits - logits_ref).abs().max()
        assert torch.allclose(loss, loss_ref, atol=ATOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_single_row_loss_matches_the_models_loss(family):
    """per_row's own loss computation agrees with the model's (so the batch tests compare losses)."""
    model = tiny_dept(family, m=3, r=2)
    (source, target), = make_rows(family, [6])
    if family == "causal":
        out = model(torch.tensor([source + target]), labels=torch.tensor([[-100] * len(source) + target]))
    else:
        out = model(torch.tensor([source]), labels=torch.tensor([target]))
    assert torch.allclose(per_row(model, family, [(source, target)])[0][1], out.loss, atol=ATOL)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", FAMILIES)
def test_padded_batch_equals_each_example_alone(family, side):
    model = tiny_dept(family, m=3, r=4, s=16)
    rows = make_rows(family, [5, 9, 2, 7])
    batch = per_row(model, family, rows, side)
    alone = [per_row(model, family, [row])[0] for row in rows]
    assert_same(batch, alone)


@pytest.mark.parametrize("family", FAMILIES)
def test_update_follows_real_tokens_not_columns(family):
    """Left padding shifts the columns, not the positions: row i of A·B meets the i-th real token."""
    model = tiny_dept(family, m=2, r=3, s=16)
    ids, mask = pad(random_rows([3, 8]), "left")
    laid = model.prepare_inputs(ids, mask)
    W = model.base_model.get_input_embeddings()(ids[0, -3:])                   # the short row's tokens
    adapter = model.dept_adapters["default"]
    expected = W + adapter.lowrank_table()[:3]                                  # rows 0..2, not 5..7
    real = laid["inputs_embeds"][0][laid["attention_mask"][0].bool()]
    got = torch.cat([real[:1], real[3:]]) if family == "encoder" else real[2:]  # drop the prompt
    assert torch.allclose(got, expected, atol=ATOL)


# ----- mixed-adapter batches -----------------------------------------------------------------
SHAPES = {"a": (4, 3, 16), "b": (2, 0, 16), "c": (0, 2, 12)}  # name: (m, r, s); b is PT, c has no prompt


def mixed_model(family: str) -> DeptModel:
    model = DeptModel(tiny_base(family), None).eval()
    for i, (name, (m, r, s)) in enumerate(SHAPES.items()):
        model.add_adapter(name, dept_config(family, m, r, s, seed=i))
        randomise(model, name, seed=10 + i)
    return model


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_batch_equals_each_adapter_alone(family, side):
    model = mixed_model(family)
    rows = make_rows(family, [6, 3, 8, 5, 4], seed=3)
    names = ["a", "b", "c", "b", "a"]
    batch = per_row(model, family, rows, side, names)
    alone = []
    for row, name in zip(rows, names):
        model.set_active_adapter(name)
        alone.append(per_row(model, family, [row])[0])
    assert_same(batch, alone)


def test_mixed_batch_rows_really_differ_by_adapter():
    model = mixed_model("causal")
    rows = make_rows("causal", [6, 6], seed=4)
    rows[1] = rows[0]
    (x, _), (y, _) = per_row(model, "causal", rows, names=["a", "c"])
    assert not torch.allclose(x[-3:], y[-3:], atol=1e-3)


def test_mixed_batch_errors():
    model = mixed_model("encoder")
    model.add_adapter("three", dept_config("encoder", 2, 2, num_labels=3))
    ids = torch.tensor([[2, 5, 6], [2, 7, 8]])
    with pytest.raises(ValueError, match="num_labels"):
        model(ids, adapter_names=["a", "three"])
    with pytest.raises(ValueError, match="adapter_names has 1 entries"):
        model(ids, adapter_names=["a"])
    with pytest.raises(KeyError, match="nope"):
        model(ids, adapter_names=["a", "nope"])


# ----- inputs longer than s -------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_overflow_truncates_to_the_first_s_tokens(family):
    model = tiny_dept(family, m=2, r=3, s=6)
    long, short = make_rows(family, [11, 4], seed=5)
    cut = (long[0][:6], long[1])  # the decoder-only target survives; only the source is cut
    assert_same(per_row(model, family, [long]), per_row(model, family, [cut]))
    for side in ("right", "left"):  # also inside a padded batch
        assert_same(per_row(model, family, [long, short], side), per_row(model, family, [cut, short]))


@pytest.mark.parametrize("family", FAMILIES)
def test_overflow_error_policy(family):
    model = tiny_dept(family, m=2, r=3, s=6, on_overflow="error")
    exact, long = make_rows(family, [6, 7], seed=6)
    per_row(model, family, [exact])  # s tokens exactly is fine
    with pytest.raises(InputTooLongError, match="max_length=6"):
        per_row(model, family, [exact, long])


def test_overflow_counts_per_adapter_in_a_mixed_batch():
    model = mixed_model("seq2seq")  # 'c' has s=12, the others 16
    rows = make_rows("seq2seq", [14, 14], seed=7)
    batch = per_row(model, "seq2seq", rows, names=["a", "c"])
    model.set_active_adapter("c")
    assert_same(batch[1:], per_row(model, "seq2seq", [(rows[1][0][:12], rows[1][1])]))
