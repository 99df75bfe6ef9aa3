"""DePT against its formula written out by hand: [P_s ; W + scale·A·B] through the frozen model.

Also: the update is zero at init, gradients reach only the adapter, the trainable count
is the budget, and the prompt's three initialisations.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers_tiny import D, FAMILIES, dept_config, randomise, tiny_base, tiny_dept, tiny_tokenizer
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)

from dept.budget import solve_budget
from dept.config import DEFAULT_INIT_TEXT
from dept.model import DeptModel

ATOL = 1e-5


def hand_inputs_embeds(model: DeptModel, ids: list[int], n_source: int | None = None) -> torch.Tensor:
    """(1, m + T, d): W' = W + scale·A·B on the first n_source tokens, P_s inserted by hand."""
    adapter = model.dept_adapters[model.active_adapter]
    config = adapter.config
    W = model.base_model.get_input_embeddings().weight[torch.tensor(ids)]     # (T, d)
    n = len(ids) if n_source is None else n_source
    if config.rank:
        scale = config.alpha / (math.sqrt(config.rank) if config.scaling == "sqrt" else config.rank)
        AB = adapter.lora_a @ adapter.lora_b                                    # (s, d)
        W = torch.cat([W[:n] + scale * AB[:n], W[n:]])                         # row i -> i-th token
    P = adapter.prompt if adapter.prompt is not None else W[:0]                 # (m, d)
    if model.family.name == "encoder":
        X = torch.cat([W[:1], P, W[1:]])                                        # [CLS] first, then the prompt
    else:
        X = torch.cat([P, W])
    return X.unsqueeze(0)


@pytest.mark.parametrize("scaling", ["sqrt", "linear"])
def test_seq2seq_forward_equals_hand_computation(scaling):
    model = tiny_dept("seq2seq", m=4, r=3, s=16, scaling=scaling)
    ids, labels = [5, 17, 42, 8, 99, 23, 1], torch.tensor([[7, 9, 11, 1]])
    out = model(torch.tensor([ids]), labels=labels)
    ref = model.base_model(inputs_embeds=hand_inputs_embeds(model, ids), labels=labels)
    assert torch.allclose(out.logits, ref.logits, atol=ATOL)
    assert torch.allclose(out.loss, ref.loss, atol=ATOL)
    # The update really moved the input: the same prompt without it gives other logits.
    model.dept_adapters["default"].lora_b.data.zero_()
    assert not torch.allclose(model(torch.tensor([ids]), labels=labels).logits, out.logits, atol=1e-3)


@pytest.mark.parametrize("scaling", ["sqrt", "linear"])
def test_causal_forward_equals_hand_computation(scaling):
    model = tiny_dept("causal", m=4, r=3, s=16, scaling=scaling)
    source, target = [5, 17, 42, 8, 99], [23, 61, 7]
    ids = torch.tensor([source + target])
    labels = torch.tensor([[-100] * len(source) + target])
    out = model(ids, labels=labels)  # source = the tokens labelled -100
    m = model.dept_adapters["default"].prompt_length
    hand_labels = torch.cat([torch.full((1, m), -100), labels], dim=1)     # the prompt has no label
    ref = model.base_model(inputs_embeds=hand_inputs_embeds(model, ids[0].tolist(), len(source)), labels=hand_labels)
    # The shared prefix (on by default) returns logits for the input tokens only: the last T.
    T = ids.shape[1]
    assert model.uses_shared_prefix() and out.logits.shape[1] == T
    assert torch.allclose(out.logits, ref.logits[:, m:], atol=ATOL)
    assert torch.allclose(out.loss, ref.loss, atol=ATOL)
    model.share_prefix = False  # the full laid-out row: every position equals the hand computation
    assert torch.allclose(model(ids, labels=labels).logits, ref.logits, atol=ATOL)
    model.share_prefix = True
    # An explicit source_mask says the same thing.
    source_mask = torch.tensor([[1] * len(source) + [0] * len(target)])
    again = model(ids, labels=labels, source_mask=source_mask)
    assert torch.allclose(again.logits, ref.logits[:, m:], atol=ATOL)
    # Without labels or source_mask every token is source.
    no_labels = model(ids)
    ref_all = model.base_model(inputs_embeds=hand_inputs_embeds(model, ids[0].tolist()))
    assert torch.allclose(no_labels.logits, ref_all.logits[:, m:], atol=ATOL)


def test_encoder_forward_equals_hand_computation_cls_then_prompt():
    model = tiny_dept("encoder", m=4, r=3, s=16)
    adapter = model.dept_adapters["default"]
    ids = [2, 17, 42, 8, 99, 3]  # [CLS]-like first token
    X = hand_inputs_embeds(model, ids)
    hidden = model.base_model(inputs_embeds=X).last_hidden_state[0]           # (1 + m + T - 1, d)
    m = adapter.prompt_length
    tokens = torch.cat([hidden[:1], hidden[1 + m:]])                           # the input's tokens, not the prompt's
    logits = adapter.head(tokens.mean(dim=0)).unsqueeze(0)                     # mean pooling, then the head
    out = model(torch.tensor([ids]), labels=torch.tensor([1]))
    assert torch.allclose(out.logits, logits, atol=ATOL)
    assert torch.allclose(out.loss, F.cross_entropy(logits, torch.tensor([1])), atol=ATOL)
    # The laid-out sequence is [CLS'] [P_s] [rest']: check the order slot by slot.
    laid = model.prepare_inputs(torch.tensor([ids]))["inputs_embeds"][0]
    assert torch.allclose(laid, X[0], atol=ATOL)
    assert torch.equal(laid[1:5], adapter.prompt.detach())


def test_encoder_cls_pooling_reads_first_slot():
    model = tiny_dept("encoder", m=2, r=2, s=16, head_pooling="cls")
    ids = [2, 17, 42, 8]
    hidden = model.base_model(inputs_embeds=hand_inputs_embeds(model, ids)).last_hidden_state
    expected = model.dept_adapters["default"].head(hidden[:, 0])
    assert torch.allclose(model(torch.tensor([ids])).logits, expected, atol=ATOL)


def _run(model: DeptModel, family: str):
    ids = torch.tensor([[5, 17, 42, 8, 99, 23]])
    if family == "seq2seq":
        return model(ids, labels=torch.tensor([[7, 9, 1]]))
    if family == "causal":
        return model(ids, labels=torch.tensor([[-100, -100, -100, 8, 99, 23]]))
    return model(ids, labels=torch.tensor([1]))


@pytest.mark.parametrize("family", FAMILIES)
def test_update_is_zero_at_init(family):
    base = tiny_base(family)
    dept = DeptModel(base, dept_config(family, m=3, r=4)).eval()
    pt = DeptModel(base, dept_config(family, m=3, r=0, seed=9)).eval()
    a, b = dept.dept_adapters["default"], pt.dept_adapters["default"]
    assert torch.count_nonzero(a.lora_b) == 0 and torch.count_nonzero(a.lora_a) > 0
    with torch.no_grad():
        b.prompt.copy_(a.prompt)
        if a.head is not None:
            b.head.load_state_dict(a.head.state_dict())
    x, y = _run(dept, family), _run(pt, family)
    assert torch.allclose(x.logits, y.logits, atol=ATOL) and torch.allclose(x.loss, y.loss, atol=ATOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_only_the_adapter(family):
    model = tiny_dept(family, m=3, r=4, s=16, random_b=False)  # B = 0: the state training starts from
    model.train()
    _run(model, family).loss.backward()
    for name, p in model.base_model.named_parameters():
        assert p.grad is None, name
    adapter = model.dept_adapters["default"]
    # dL/dB = scale·Aᵀ·dL/dW' is nonzero; dL/dA = scale·dL/dW'·Bᵀ is exactly zero while B = 0.
    assert torch.count_nonzero(adapter.lora_b.grad) > 0
    assert torch.count_nonzero(adapter.lora_a.grad) == 0
    assert torch.count_nonzero(adapter.prompt.grad) > 0
    if family == "encoder":
        assert torch.count_nonzero(adapter.head.weight.grad) > 0 and torch.count_nonzero(adapter.head.bias.grad) > 0
    names = [n for n, _ in model.trainable_parameters()]
    assert names and all(n.startswith("dept_adapters.") for n in names)


def test_gradient_of_a_once_b_is_nonzero():
    model = tiny_dept("causal", m=2, r=3, s=16)  # B random
    _run(model, "causal").loss.backward()
    grad_a = model.dept_adapters["default"].lora_a.grad                      # (s, r)
    n_source = 3  # rows of A for positions past the source never touch the loss
    assert torch.count_nonzero(grad_a[:n_source]) > 0
    assert torch.count_nonzero(grad_a[n_source:]) == 0


@pytest.mark.parametrize("family", ["seq2seq", "causal"])
def test_trainable_count_equals_budget(family):
    budget = solve_budget(vanilla_length=10, max_length=64, hidden_size=D, rank=2)
    assert (budget.prompt_length, budget.exact) == (4, True)
    model = DeptModel(tiny_base(family), dept_config(family, m=budget.prompt_length, r=2, s=64))
    count = sum(p.numel() for _, p in model.trainable_parameters())
    assert count == budget.trainable_params == budget.vanilla_params == 4 * D + (64 + D) * 2
    assert count == model.dept_adapters["default"].config.trainable_params(D)


def test_encoder_trainable_count_is_budget_plus_head():
    model = DeptModel(tiny_base("encoder"), dept_config("encoder", m=4, r=2, s=64, num_labels=3))
    count = sum(p.numel() for _, p in model.trainable_parameters())
    assert count == 4 * D + (64 + D) * 2 + (D * 3 + 3)


def test_only_active_adapter_trains():
    model = tiny_dept("causal")
    model.add_adapter("other", dept_config("causal", m=2, r=0))
    assert all(n.startswith("dept_adapters.other.") for n, _ in model.trainable_parameters())
    model.set_active_adapter("default")
    assert all(n.startswith("dept_adapters.default.") for n, _ in model.trainable_parameters())
    model.delete_adapter("default")  # the remaining adapter becomes active, and trainable
    assert model.active_adapter == "other"
    assert [n for n, _ in model.trainable_parameters()] == ["dept_adapters.other.prompt"]


# ----- prompt initialisation ---------------------------------------------------------------
def test_text_init_repeats_the_init_texts_embeddings():
    tokenizer = tiny_tokenizer()
    ids = tokenizer(DEFAULT_INIT_TEXT, add_special_tokens=False)["input_ids"]
    assert len(ids) == 8 and tokenizer.unk_token_id not in ids
    model = DeptModel(tiny_base("causal"), dept_config("causal", m=19, prompt_init="text"), tokenizer=tokenizer)
    table = model.base_model.get_input_embeddings().weight
    expected = table[torch.tensor((ids * 3)[:19])]
    assert torch.equal(model.dept_adapters["default"].prompt.detach(), expected)


def test_text_init_without_tokenizer_is_a_clear_error():
    with pytest.raises(ValueError, match="tokenizer"):
        DeptModel(tiny_base("causal"), dept_config("causal", prompt_init="text"))


def test_vocab_init_rows_are_embedding_rows():
    model = DeptModel(tiny_base("seq2seq"), dept_config("seq2seq", m=12, prompt_init="vocab"))
    table = model.base_model.get_input_embeddings().weight                    # (V, d)
    prompt = model.dept_adapters["default"].prompt.detach()                    # (m, d)
    matches = (prompt[:, None, :] == table[None]).all(dim=-1)                 # (m, V)
    assert matches.any(dim=1).all()


def test_random_init_has_the_embeddings_rms():
    base = tiny_base("causal")
    with torch.no_grad():
        base.get_input_embeddings().weight.mul_(0.1)  # a small table: a unit normal would be 10x too big
    model = DeptModel(base, dept_config("causal", m=40, prompt_init="random"))
    rms = base.get_input_embeddings().weight.pow(2).mean().sqrt()
    prompt_rms = model.dept_adapters["default"].prompt.detach().pow(2).mean().sqrt()
    assert abs(prompt_rms / rms - 1) < 0.15


@pytest.mark.parametrize("init", ["vocab", "random"])
def test_seeded_init_is_reproducible(init):
    base = tiny_base("causal")
    one = DeptModel(base, dept_config("causal", m=5, r=3, prompt_init=init, seed=123))
    two = DeptModel(base, dept_config("causal", m=5, r=3, prompt_init=init, seed=123))
    other = DeptModel(base, dept_config("causal", m=5, r=3, prompt_init=init, seed=124))
    for key, value in one.adapter_state_dict().items():
        assert torch.equal(value, two.adapter_state_dict()[key]), key
    assert not torch.equal(one.adapter_state_dict()["lora_a"], other.adapter_state_dict()["lora_a"])


def test_encoder_token_type_ids_follow_their_tokens():
    """A BERT tokenizer's segments are laid out with the prompt (type 0, inside segment A)."""
    model = tiny_dept("encoder", m=3, r=2, s=16)
    ids, types = [2, 17, 42, 3, 8, 99, 3], [0, 0, 0, 0, 1, 1, 1]
    X = hand_inputs_embeds(model, ids)
    hand_types = torch.tensor([types[:1] + [0] * 3 + types[1:]])
    hidden = model.base_model(inputs_embeds=X, token_type_ids=hand_types).last_hidden_state
    tokens = torch.cat([hidden[:, :1], hidden[:, 1 + 3:]], dim=1)               # pool the input's tokens only
    expected = model.dept_adapters["default"].head(tokens.mean(dim=1))
    got = model(torch.tensor([ids]), token_type_ids=torch.tensor([types])).logits
    assert torch.allclose(got, expected, atol=ATOL)
    # Padded with a shorter pair, the row is unchanged.
    batch = model(torch.tensor([ids, [2, 5, 3, 6, 3, 0, 0]]), torch.tensor([[1] * 7, [1] * 5 + [0] * 2]),
                  token_type_ids=torch.tensor([types, [0, 0, 0, 1, 1, 0, 0]])).logits
    assert torch.allclose(batch[:1], expected, atol=ATOL)


def test_encoder_regression_head_uses_mse():
    model = tiny_dept("encoder", m=2, r=2, s=16, num_labels=1)
    ids = torch.tensor([[2, 5, 6, 7], [2, 8, 9, 0]])
    mask = (ids != 0).long()
    out = model(ids, mask, labels=torch.tensor([0.5, -1.0]))
    assert out.logits.shape == (2, 1)
    assert torch.allclose(out.loss, F.mse_loss(out.logits.squeeze(-1), torch.tensor([0.5, -1.0])), atol=ATOL)
