"""Generation: the KV-cached `generate` equals a greedy loop that recomputes the whole DePT
forward at every step; batched (padded) and mixed-adapter generation equal each row alone."""

from __future__ import annotations

import pytest
import torch
from helpers_tiny import PAD, dept_config, pad, randomise, random_rows, tiny_base, tiny_dept
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)

from dept.model import DeptModel

STEPS = 6


@torch.no_grad()
def greedy_by_hand(model: DeptModel, source: list[int], steps: int = STEPS, name: str | None = None) -> list[int]:
    """Greedy decoding without any cache: the full DeptModel.forward at every step."""
    names = [name] if name else None
    src = torch.tensor([source])
    new: list[int] = []
    for _ in range(steps):
        if model.family.name == "seq2seq":
            decoder = torch.tensor([[model.base_model.config.decoder_start_token_id] + new])
            logits = model(src, decoder_input_ids=decoder, adapter_names=names, use_cache=False).logits
        else:
            # Generated tokens follow the source as non-source tokens: the update is the source's only.
            ids = torch.tensor([source + new])
            source_mask = torch.tensor([[1] * len(source) + [0] * len(new)])
            logits = model(ids, source_mask=source_mask, adapter_names=names, use_cache=False).logits
        new.append(int(logits[0, -1].argmax()))
    return new


def generated(model: DeptModel, out: torch.Tensor) -> list[list[int]]:
    """Only the new tokens: seq2seq output starts with the decoder start token."""
    if model.family.name == "seq2seq":
        assert (out[:, 0] == model.base_model.config.decoder_start_token_id).all()
        out = out[:, 1:]
    assert out.shape[1] == STEPS
    return out.tolist()


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_cached_generation_equals_uncached_greedy_loop(family):
    model = tiny_dept(family, m=3, r=4, s=16)
    source = random_rows([7])[0]
    out = model.generate(torch.tensor([source]), max_new_tokens=STEPS, do_sample=False, use_cache=True)
    expected = greedy_by_hand(model, source)
    assert generated(model, out) == [expected]
    assert len(set(expected)) > 2  # varied text, so a broken cache would show
    if family == "causal":  # dept.decoding, the one decoder path, always decodes over its KV cache
        with pytest.raises(ValueError, match="always uses the KV cache"):
            model.generate(torch.tensor([source]), max_new_tokens=STEPS, use_cache=False)
        return
    no_cache = model.generate(torch.tensor([source]), max_new_tokens=STEPS, do_sample=False, use_cache=False)
    assert generated(model, no_cache) == [expected]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_batched_generation_equals_each_alone(family, side):
    model = tiny_dept(family, m=3, r=4, s=16)
    sources = random_rows([4, 9, 6], seed=2)
    ids, mask = pad(sources, side)
    out = model.generate(ids, mask, max_new_tokens=STEPS, do_sample=False)
    alone = [generated(model, model.generate(torch.tensor([s]), max_new_tokens=STEPS, do_sample=False))[0]
             for s in sources]
    assert generated(model, out) == alone
    assert generated(model, out)[0] == greedy_by_hand(model, sources[0])


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_mixed_adapter_generation_equals_each_alone(family):
    model = DeptModel(tiny_base(family), None).eval()
    for i, (name, m, r) in enumerate([("a", 4, 3), ("pt", 2, 0), ("lowrank", 0, 2)]):
        model.add_adapter(name, dept_config(family, m, r, 16, seed=i))
        randomise(model, name, seed=20 + i)
    sources = random_rows([5, 8, 3, 6], seed=4)
    names = ["a", "pt", "lowrank", "a"]
    ids, mask = pad(sources, "left" if family == "causal" else "right")
    out = generated(model, model.generate(ids, mask, adapter_names=names, max_new_tokens=STEPS, do_sample=False))
    assert out[2] == greedy_by_hand(model, sources[2], name="lowrank")
    for row, (source, name) in enumerate(zip(sources, names)):
        model.set_active_adapter(name)
        alone = model.generate(torch.tensor([source]), max_new_tokens=STEPS, do_sample=False)
        assert out[row] == generated(model, alone)[0]


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_sampled_generation_is_reproducible(family):
    model = tiny_dept(family, m=3, r=2)
    ids, mask = pad(random_rows([5, 3], seed=5), "left")
    runs = []
    for _ in range(2):
        torch.manual_seed(1234)
        runs.append(model.generate(ids, mask, max_new_tokens=STEPS, do_sample=True, top_k=0, temperature=1.5))
    assert torch.equal(runs[0], runs[1])
    assert runs[0].shape[0] == 2 and ((runs[0] >= 0) & (runs[0] < 100)).all()


def test_decoder_generation_refuses_arguments_it_does_not_honour():
    model = tiny_dept("causal")
    with pytest.raises(TypeError, match="num_beams"):
        model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=2, num_beams=4)


def test_min_new_tokens_holds_off_the_end_of_sequence():
    model = tiny_dept("causal", m=3, r=2)
    source = torch.tensor([random_rows([5], seed=8)[0]])
    first = int(model.generate(source, max_new_tokens=1)[0, 0])
    model.base_model.generation_config.eos_token_id = first  # the greedy first token now ends the row
    assert model.generate(source, max_new_tokens=4).tolist() == [[first]]
    forced = model.generate(source, max_new_tokens=4, min_new_tokens=4)
    assert forced.shape == (1, 4) and int(forced[0, 0]) != first


def test_encoder_does_not_generate():
    model = tiny_dept("encoder")
    with pytest.raises(ValueError, match="do not generate"):
        model.generate(torch.tensor([[2, 5, 6]]))


def test_generation_leaves_training_state_and_grads_alone():
    model = tiny_dept("causal").train()
    model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=2, do_sample=False)
    assert model.training
    assert all(p.grad is None for _, p in model.trainable_parameters())
    assert PAD == model.base_model.config.pad_token_id
