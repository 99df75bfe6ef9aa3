"""dept.decoding, the one decoder generation path: rows that join a running decode between
steps (continuous batching) get exactly the tokens they get alone, and a short row that joins
late still leaves first."""

from __future__ import annotations

import pytest
import torch
from helpers_tiny import PAD, dept_config, randomise, random_rows, tiny_base
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)

from dept.decoding import AdapterRef, Row, can_merge, generate_rows
from dept.model import DeptModel


@pytest.fixture(scope="module")
def model() -> DeptModel:
    model = DeptModel(tiny_base("causal"), None).eval()
    for i, (name, m, r) in enumerate([("a", 4, 3), ("pt", 2, 0)]):
        model.add_adapter(name, dept_config("causal", m, r, 16, seed=i))
        randomise(model, name, seed=30 + i)
    model.base_model.generation_config.eos_token_id = None  # rows run to max_tokens: lengths are known
    return model


def row(source: list[int], adapter: str | None, tokens: int) -> Row:
    return Row(source, AdapterRef(adapter) if adapter else None, tokens)


def alone(model: DeptModel, source: list[int], adapter: str | None, tokens: int) -> list[int]:
    single = row(source, adapter, tokens)
    generate_rows(model, [single], PAD, on_done=lambda r: None)
    return single.tokens


def test_rows_joining_between_steps_decode_as_they_do_alone(model):
    sources = random_rows([6, 3, 9, 4, 7], seed=11)
    plan = [("a", 10), ("pt", 3), (None, 5), ("a", 4), ("pt", 6)]
    rows = [row(s, name, n) for s, (name, n) in zip(sources, plan)]
    arrivals = {2: rows[1:3], 4: rows[3:4], 5: rows[4:]}  # step -> rows that join there
    calls, finished, running_seen = [0], [], []

    def admit(running: int) -> list[Row]:
        calls[0] += 1
        running_seen.append(running)
        return arrivals.get(calls[0], [])

    generate_rows(model, rows[:1], PAD, on_done=finished.append, admit=admit)
    for r, source, (name, n) in zip(rows, sources, plan):
        assert r.finish_reason == "length" and r.tokens == alone(model, source, name, n), name
    assert finished.index(rows[1]) < finished.index(rows[0])  # the short late row left first
    assert max(running_seen) >= 3                              # rows really ran together
    assert len({tuple(r.tokens) for r in rows}) == len(rows)   # varied text: a broken merge would show


def test_a_decode_whose_rows_all_finished_takes_new_rows(model):
    sources = random_rows([5, 5], seed=12)
    first, later = row(sources[0], "a", 2), row(sources[1], "pt", 4)
    calls = []

    def admit(running: int) -> list[Row]:
        calls.append(running)
        return [later] if len(calls) == 2 else []

    generate_rows(model, [first], PAD, on_done=lambda r: None, admit=admit)
    assert calls[1] == 0 and later.tokens == alone(model, sources[1], "pt", 4)


def test_the_base_models_rows_merge_with_adapters_rows(model):
    sources = random_rows([4, 8, 5], seed=13)
    rows = [row(sources[0], None, 5), row(sources[1], "a", 5), row(sources[2], None, 3)]
    generate_rows(model, rows, PAD, on_done=lambda r: None)
    assert [r.tokens for r in rows] == [alone(model, s, r.adapter and r.adapter.name, r.max_tokens)
                                        for s, r in zip(sources, rows)]


def test_only_full_attention_caches_merge():
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 0)
    assert can_merge(cache)
    assert not can_merge(object())


def test_a_seeded_sampled_row_draws_the_same_tokens_joined_or_alone(model):
    sources = random_rows([6, 4], seed=14)

    def sampled() -> Row:
        return Row(sources[1], AdapterRef("pt"), 8, temperature=1.3, top_p=0.9, top_k=20,
                   generator=torch.Generator().manual_seed(7))

    alone_row = sampled()
    generate_rows(model, [alone_row], PAD, on_done=lambda r: None)
    joined_row, calls = sampled(), []

    def admit(running: int) -> list[Row]:
        calls.append(running)
        return [joined_row] if len(calls) == 3 else []

    torch.manual_seed(0)  # the global stream moves; the row's own generator decides
    generate_rows(model, [row(sources[0], "a", 12)], PAD, on_done=lambda r: None, admit=admit)
    assert joined_row.tokens == alone_row.tokens and len(alone_row.tokens) == 8


def test_a_cancelled_row_leaves_and_the_others_go_on(model):
    sources = random_rows([5, 5], seed=15)
    stay, leave = row(sources[0], "a", 6), row(sources[1], "pt", 6)
    leave.cancelled = lambda: len(leave.tokens) >= 2
    finished = []
    generate_rows(model, [stay, leave], PAD, on_done=finished.append)
    assert finished == [leave, stay] and leave.finish_reason == "cancelled" and len(leave.tokens) == 2
    assert stay.tokens == alone(model, sources[0], "a", 6)
