"""The shared prefix (prefix.py): a decoder-only model that runs each adapter's prompt once
per batch gives the same loss and the same adapter gradients as the full laid-out rows;
the prompt cache kept for evaluation is invalidated when the prompt changes."""

from __future__ import annotations

import pytest
import torch
from helpers_tiny import PAD, dept_config, pad, pad_like, randomise, random_rows, tiny_base, tiny_dept
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)

from dept.config import DeptConfig
from dept.model import DeptModel
from dept.prefix import PromptCache


def batch(lengths, target_lengths, side="left", seed=1):
    """(input_ids, attention_mask, labels): source + target rows, -100 on the source."""
    sources, targets = random_rows(lengths, seed=seed), random_rows(target_lengths, seed=seed + 1)
    ids, mask = pad([s + t for s, t in zip(sources, targets)], side)
    labels = pad_like([[-100] * len(s) + t for s, t in zip(sources, targets)], mask, -100)
    return ids, mask, labels


def loss_and_grads(model: DeptModel, share: bool, *args, names=None, **kw):
    """The loss and every adapter tensor's gradient (all adapters, not only the active one)."""
    model.share_prefix = share
    model.zero_grad(set_to_none=True)
    params = [p for a in model.dept_adapters.values() for _, _, p in a.adapter_params()]
    for p in params:
        p.requires_grad_(True)
    out = model(*args, adapter_names=names, **kw)
    out.loss.backward()
    return out.loss.detach(), [None if p.grad is None else p.grad.clone() for p in params]


def assert_same(model, *args, names=None, **kw):
    assert model.uses_shared_prefix(names)
    loss_s, grads_s = loss_and_grads(model, True, *args, names=names, **kw)
    loss_u, grads_u = loss_and_grads(model, False, *args, names=names, **kw)
    torch.testing.assert_close(loss_s, loss_u, rtol=1e-5, atol=1e-6)
    assert len(grads_s) == len(grads_u)
    for gs, gu in zip(grads_s, grads_u):
        assert (gs is None) == (gu is None)
        if gs is not None:
            torch.testing.assert_close(gs, gu, rtol=1e-4, atol=1e-4 * float(gu.abs().max()))
    assert any(g is not None and torch.count_nonzero(g) for g in grads_s)
    return loss_s, grads_s


@pytest.mark.parametrize("trim", [False, True])
@pytest.mark.parametrize("side", ["left", "right"])
def test_shared_prefix_equals_full_rows(side, trim):
    model = tiny_dept("causal", m=5, r=3, s=16).train()
    ids, mask, labels = batch([4, 9, 2, 7], [2, 3, 1, 2], side=side)
    loss, grads = assert_same(model, ids, mask, labels=labels, trim_logits=trim)
    assert torch.count_nonzero(grads[0])  # the prompt learns through the shared pass
    assert loss > 1.0  # a real loss over 100 random tokens, not a degenerate 0


def test_shared_prefix_logits_equal_on_every_real_token():
    model = tiny_dept("causal", m=4, r=2, s=16)
    ids, mask, _ = batch([6, 3, 8], [0, 0, 0], side="right")
    model.share_prefix = True
    shared = model(ids, mask).logits                       # (B, T, V): input tokens only, left-padded
    model.share_prefix = False
    full = model(ids, mask).logits                          # (B, m + T, V) left-padded layout
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        torch.testing.assert_close(shared[b, -n:], full[b, -n:], rtol=1e-5, atol=1e-5)


def mixed_model():
    """Four adapters: m = 5, r = 3; m = 2, r = 0 (PT); m = 0, r = 4 (update only); m = 7, r = 1."""
    model = tiny_dept("causal", m=5, r=3, s=16, base=tiny_base("causal"))
    for i, (name, m, r) in enumerate([("pt", 2, 0), ("lowrank", 0, 4), ("long", 7, 1)]):
        model.add_adapter(name, dept_config("causal", m=m, r=r, s=16, seed=i + 1))
        randomise(model, name, seed=i + 2)
    return model.train()


@pytest.mark.parametrize("side", ["left", "right"])
def test_mixed_adapters_with_different_prompt_lengths(side):
    model = mixed_model()
    ids, mask, labels = batch([4, 9, 2, 7, 5, 3], [2, 3, 1, 2, 2, 1], side=side)
    names = ["default", "pt", "lowrank", "long", "pt", "default"]
    _, grads = assert_same(model, ids, mask, labels=labels, names=names)
    # Every adapter's prompt got a gradient (the m = 0 adapter has none to get).
    for name, adapter in model.dept_adapters.items():
        if adapter.prompt is not None:
            assert adapter.prompt.grad is not None and torch.count_nonzero(adapter.prompt.grad), name


def test_mixed_batch_rows_equal_each_row_alone():
    model = mixed_model().eval()
    ids, mask, labels = batch([4, 9, 2, 7], [2, 3, 1, 2], side="left")
    names = ["long", "lowrank", "pt", "default"]
    model.share_prefix = True
    with torch.no_grad():
        together = model(ids, mask, labels=labels, adapter_names=names).logits
        for b in range(4):
            n = int(mask[b].sum())
            alone = model(ids[b:b + 1, -n:], labels=labels[b:b + 1, -n:], adapter_names=[names[b]]).logits
            torch.testing.assert_close(together[b, -n:], alone[0], rtol=1e-5, atol=1e-5)


def test_only_prompt_free_adapters_take_the_old_path():
    model = tiny_dept("causal", m=0, r=4, s=16)
    assert not model.uses_shared_prefix()
    ids, mask, labels = batch([4, 6], [2, 2])
    assert torch.isfinite(model(ids, mask, labels=labels).loss)


def test_gradient_accumulation_two_micro_batches_equal_one_batch():
    model = tiny_dept("causal", m=5, r=3, s=16).train()
    ids, mask, labels = batch([4, 9, 2, 7], [2, 2, 2, 2], side="left")  # equal target counts: mean of means
    params = [p for _, p in model.trainable_parameters()]
    model.share_prefix = True
    model.zero_grad(set_to_none=True)
    for half in (slice(0, 2), slice(2, 4)):
        (model(ids[half], mask[half], labels=labels[half]).loss / 2).backward()
    accumulated = [p.grad.clone() for p in params]
    model.share_prefix = False
    model.zero_grad(set_to_none=True)
    model(ids, mask, labels=labels).loss.backward()
    for a, b in zip(accumulated, [p.grad for p in params]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_share_prefix_off_and_other_families():
    model = DeptModel(tiny_base("causal"), dept_config("causal"), share_prefix=False)
    assert model.share_prefix is False and not model.uses_shared_prefix()
    model.share_prefix = True
    assert model.uses_shared_prefix()
    for family in ("seq2seq", "encoder"):
        assert not tiny_dept(family).uses_shared_prefix()


# ----- the persistent prompt cache (evaluation) ------------------------------------------

def test_scores_and_generations_equal_with_and_without_the_cache():
    model = mixed_model().eval()
    ids, mask, labels = batch([4, 9, 2, 7], [2, 3, 1, 2], side="left")
    names = ["long", "lowrank", "pt", "default"]
    sources, smask = pad(random_rows([4, 9, 2, 7], seed=5), "left")
    candidates = [[5, 6], [7], [8, 9, 10]]
    results = {}
    for share in (True, False):
        model.share_prefix = share
        model.prompt_cache.clear()
        first = (model.score(ids, mask, labels, adapter_names=names),
                 model.score_candidates(sources, smask, candidates, adapter_names=names),
                 model.generate(sources, smask, adapter_names=names, max_new_tokens=5, do_sample=False))
        again = (model.score(ids, mask, labels, adapter_names=names),
                 model.score_candidates(sources, smask, candidates, adapter_names=names),
                 model.generate(sources, smask, adapter_names=names, max_new_tokens=5, do_sample=False))
        results[share] = (first, again)
    assert model.prompt_cache.hits > 0
    (s1, c1, g1), (s2, c2, g2) = results[True]
    (u1, d1, h1), _ = results[False]
    torch.testing.assert_close(s1, u1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s2, s1, rtol=0, atol=0)          # the cached KV is the computed KV
    torch.testing.assert_close(c1, d1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c2, c1, rtol=0, atol=0)
    assert g1.tolist() == h1.tolist() == g2.tolist()
    assert len({t for row in g1.tolist() for t in row}) > 2


def test_cache_follows_optimiser_steps_load_and_delete(tmp_path):
    model = tiny_dept("causal", m=4, r=2, s=16)
    ids, mask, labels = batch([4, 6], [2, 2])
    before = model.score(ids, mask, labels)
    assert len(model.prompt_cache.entries) == 1
    # An optimiser step changes the prompt in place: the next score must see it.
    model.train()
    torch.optim.SGD([p for _, p in model.trainable_parameters()], lr=1.0).zero_grad()
    model(ids, mask, labels=labels).loss.backward()
    torch.optim.SGD([p for _, p in model.trainable_parameters()], lr=1.0).step()
    model.eval()
    after = model.score(ids, mask, labels)
    model.share_prefix = False
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, model.score(ids, mask, labels), rtol=1e-5, atol=1e-5)
    model.share_prefix = True
    # load_adapter copies new tensors into a new adapter under the same name.
    model.save_adapter(tmp_path / "a")
    with torch.no_grad():
        model.dept_adapters["default"].prompt.mul_(3.0)
    tripled = model.score(ids, mask, labels)
    assert not torch.allclose(tripled, after)
    model.delete_adapter("default")
    assert not model.prompt_cache.entries
    model.load_adapter(tmp_path / "a")
    torch.testing.assert_close(model.score(ids, mask, labels), after, rtol=1e-5, atol=1e-5)


def test_lru_evicts_least_recently_used_adapter():
    model = mixed_model().eval()   # prompts: default m = 5, pt m = 2, long m = 7
    long_kv = model.prompt_cache.get(model.base_model, "long", model.dept_adapters["long"].prompt, torch.float32)
    per_vector = sum(k.numel() * k.element_size() * 2 for k, _ in long_kv) // 7
    model.prompt_cache = PromptCache(max_bytes=12 * per_vector)  # room for m = 5 + 7, not 5 + 2 + 7
    ids, mask, labels = batch([4], [2])
    for name in ["default", "pt", "default", "long"]:  # pt is now the least recently used
        model.score(ids, mask, labels, adapter_names=[name])
    assert [key[0] for key in model.prompt_cache.entries] == ["default", "long"]
    assert model.prompt_cache.nbytes == 12 * per_vector
    assert (model.prompt_cache.hits, model.prompt_cache.misses) == (1, 3)


def test_training_does_not_use_the_cache():
    model = tiny_dept("causal", m=4, r=2, s=16).train()
    ids, mask, labels = batch([4, 6], [2, 2])
    model(ids, mask, labels=labels).loss.backward()
    assert not model.prompt_cache.entries


@pytest.mark.slow
def test_smollm2_shared_prefix_equals_full_rows():
    model = DeptModel.from_pretrained("smollm2-135m", DeptConfig(prompt_length=12, rank=4, max_length=64))
    randomise(model)
    tok = model.tokenizer
    texts = ["The movie was wonderful.", "A dull, lifeless and far too long film that I regret seeing."]
    rows = [tok(t)["input_ids"] for t in texts]
    target = tok(" positive", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids, mask = pad([r + target for r in rows], "left", value=tok.pad_token_id or 0)
    labels = pad_like([[-100] * len(r) + target for r in rows], mask, -100)
    model.train()
    loss, grads = assert_same(model, ids, mask, labels=labels)
    assert 0.5 < loss < 30
    assert torch.count_nonzero(grads[0])


def tiny_gemma(window: int):
    """Gemma 3: sliding-window and full-attention layers, with `window` columns of attention."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, pad_token_id=0,
                              sliding_window=window, layer_types=["sliding_attention", "full_attention"])
    return Gemma3ForCausalLM(config).eval().requires_grad_(False)


def test_sliding_window_model_shares_only_what_fits_in_the_window():
    ids, mask, labels = batch([4, 9, 2], [2, 3, 1], side="left")           # 12 columns
    wide = DeptModel(tiny_gemma(64), dept_config("causal", m=5, r=3, s=16))
    randomise(wide)
    wide.train()
    assert_same(wide, ids, mask, labels=labels)                            # 5 + 12 < 64: shared, exact
    narrow = DeptModel(tiny_gemma(8), dept_config("causal", m=5, r=3, s=16))
    assert not narrow.uses_shared_prefix(width=ids.shape[1])               # 5 + 12 >= 8: laid-out rows
    assert narrow(ids, mask, labels=labels).logits.shape[1] == 5 + ids.shape[1]


def test_activation_checkpointing_falls_back_and_says_so_once(caplog):
    model = tiny_dept("causal", m=4, r=2, s=16).train()
    ids, mask, labels = batch([4, 6], [2, 2])
    base = model.base_model  # transformers >= 5.20 names it activation checkpointing, earlier ones gradient
    (getattr(base, "activation_checkpointing_enable", None) or base.gradient_checkpointing_enable)()
    with caplog.at_level("WARNING", logger="dept.prefix"):
        for _ in range(2):
            out = model(ids, mask, labels=labels)
    assert out.logits.shape[1] == 4 + ids.shape[1]                         # the laid-out rows
    said = [r for r in caplog.records if "does not share the soft prompt" in r.getMessage()]
    assert len(said) == 1 and "checkpointing" in said[0].getMessage()
