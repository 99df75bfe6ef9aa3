"""Optimiser groups, weight decay, the learning-rate schedule and gradient accumulation."""

from __future__ import annotations

import math

import pytest
import torch
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import (bert_dir, dept_cli, final_tensors, llama_dir, max_abs_diff, read_jsonl,  # noqa: F401
                           write_rte)

from dept.training.methods import build_model, count_trainable, param_groups, warmup_steps
from dept.training.options import LOWRANK_LR_PER_RMS, PROMPT_LR_PER_RMS, TrainOptions

META = {"task": "demo", "target_words": "natural", "decoder": "rank"}


def built(model_dir, **kw):
    options = TrainOptions(model_name_or_path=str(model_dir), prompt_init="random", max_length=32, **kw)
    num_labels = 2 if "bert" in str(model_dir) else None
    model, _, _, rms = build_model(options, num_labels, META)
    return model, options, rms


def by_name(groups: list[dict]) -> dict[str, dict]:
    return {g["name"]: g for g in groups}


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_dept_groups_prompt_and_lowrank_at_their_rates(llama_dir):
    model, options, rms = built(llama_dir, learning_rate=0.3, lowrank_lr=0.002, weight_decay=0.01)
    groups = by_name(param_groups(model, options, rms))
    adapter = model.dept_adapters["default"]
    assert list(groups) == ["prompt", "lowrank"]
    assert ids(groups["prompt"]["params"]) == ids([adapter.prompt])
    assert ids(groups["lowrank"]["params"]) == ids([adapter.lora_a, adapter.lora_b])
    assert groups["prompt"]["lr"] == 0.3 and groups["lowrank"]["lr"] == 0.002
    assert all(g["weight_decay"] == 0.01 for g in groups.values())


def test_scale_aware_default_rates_follow_the_embedding_rms(llama_dir):
    model, options, rms = built(llama_dir)
    table = model.base_model.get_input_embeddings().weight
    by_hand = float(table.pow(2).mean().sqrt())
    assert rms == pytest.approx(by_hand, rel=1e-6)
    groups = by_name(param_groups(model, options, rms))
    assert groups["prompt"]["lr"] == pytest.approx(PROMPT_LR_PER_RMS * by_hand, rel=1e-6)
    assert groups["lowrank"]["lr"] == pytest.approx(LOWRANK_LR_PER_RMS * by_hand, rel=1e-6)


def test_prompt_tuning_has_no_lowrank_group(llama_dir):
    model, options, rms = built(llama_dir, method="pt", prompt_length=7)
    groups = param_groups(model, options, rms)
    assert [g["name"] for g in groups] == ["prompt"]
    assert count_trainable(model) == 7 * 32  # l·d, nothing else


def test_encoder_head_is_its_own_group(bert_dir):
    model, options, rms = built(bert_dir, head_lr=0.004, weight_decay=0.02)
    groups = by_name(param_groups(model, options, rms))
    head = model.dept_adapters["default"].head
    assert list(groups) == ["prompt", "lowrank", "head"]
    assert ids(groups["head"]["params"]) == ids([head.weight, head.bias])
    assert groups["head"]["lr"] == 0.004
    assert all(g["weight_decay"] == 0.02 for g in groups.values())


@pytest.mark.parametrize("method", ["lora", "full"])
def test_baselines_train_the_encoder_head_at_the_head_rate(bert_dir, method):
    model, options, rms = built(bert_dir, method=method, head_lr=0.004)
    groups = by_name(param_groups(model, options, rms))
    assert list(groups) == [method, "head"]
    head = {n for n, p in model.named_parameters() if id(p) in ids(groups["head"]["params"])}
    assert head and all("classifier" in n for n in head) and len(head) == 2  # weight and bias
    assert groups["head"]["lr"] == 0.004 and groups[method]["lr"] == (5e-4 if method == "lora" else 5e-5)
    grouped = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_decoder_baselines_have_one_group(llama_dir):
    model, options, rms = built(llama_dir, method="lora")
    assert [g["name"] for g in param_groups(model, options, rms)] == ["lora"]


@pytest.mark.parametrize("kind", ["llama", "bert"])
def test_groups_cover_every_trainable_tensor_once(kind, llama_dir, bert_dir):
    model, options, rms = built(llama_dir if kind == "llama" else bert_dir)
    grouped = [id(p) for g in param_groups(model, options, rms) for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])
def test_weight_decay_is_really_applied(llama_dir, weight_decay):
    """With zero gradients Adam's moment update is 0, so AdamW only decays: p <- p·(1 - lr·wd)."""
    model, options, rms = built(llama_dir, learning_rate=0.1, lowrank_lr=0.02, weight_decay=weight_decay)
    groups = param_groups(model, options, rms)
    optimizer = torch.optim.AdamW(groups)
    before = {id(p): p.detach().clone() for g in groups for p in g["params"]}
    for g in groups:
        for p in g["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    for g in groups:
        for p in g["params"]:
            torch.testing.assert_close(p.detach(), before[id(p)] * (1 - g["lr"] * weight_decay))
    prompt = model.dept_adapters["default"].prompt
    assert weight_decay == 0 or not torch.equal(prompt.detach(), before[id(prompt)])


def test_lora_trains_only_lora_tensors(llama_dir):
    model, options, rms = built(llama_dir, method="lora", lora_baseline_rank=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    # q_proj (32 -> 32) and v_proj (32 -> 16: 2 key-value heads of 8) in each of 2 layers
    assert count_trainable(model) == 2 * (4 * (32 + 32) + 4 * (32 + 16))
    (group,) = param_groups(model, options, rms)
    assert group["name"] == "lora" and group["lr"] == 5e-4 and group["weight_decay"] == options.optimiser.weight_decay


def test_lora_on_an_encoder_also_trains_the_classifier(bert_dir):
    model, options, rms = built(bert_dir, method="lora", lora_baseline_rank=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    head = [n for n in trainable if "classifier" in n]
    assert head and all("lora_" in n or "classifier" in n for n in trainable)
    assert sum(p.numel() for n, p in model.named_parameters() if n in head) == 32 * 2 + 2


def test_full_fine_tuning_trains_every_weight(llama_dir):
    model, options, rms = built(llama_dir, method="full")
    params = list(model.parameters())
    assert all(p.requires_grad for p in params)
    (group,) = param_groups(model, options, rms)
    assert group["name"] == "full" and group["lr"] == 5e-5 and len(group["params"]) == len(params)


def test_default_warmup_is_six_percent_of_the_steps():
    assert warmup_steps(TrainOptions(max_steps=1000)) == 60
    assert warmup_steps(TrainOptions(max_steps=20)) == 2  # rounded up: never no warm-up
    assert warmup_steps(TrainOptions(max_steps=1000, warmup_steps=7)) == 7


def linear_schedule(step: int, warmup: int, total: int) -> float:
    """The multiplier of the base rate for the update of 0-based step `step`."""
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / (total - warmup))


@pytest.mark.parametrize("warmup", [None, 5])
def test_schedule_warms_up_then_decays_linearly_to_zero(llama_dir, tmp_path, warmup):
    steps = 20
    extra = [] if warmup is None else ["--warmup_steps", warmup]
    dept_cli("train", "--model", llama_dir, "--task", "demo", "--output_dir", tmp_path, "--max_steps", steps,
             "--logging_steps", 1, "--eval_steps", 100, "--save_steps", 100, "--eval_at_start", "false",
             "--no_test", "--max_eval_samples", 2, "--per_device_train_batch_size", 2, "--prompt_init", "random",
             "--learning_rate", 0.05, "--lora_embedding_lr", 0.01, *extra)
    logged = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in logged] == list(range(1, steps + 1))
    w = math.ceil(0.06 * steps) if warmup is None else warmup
    # lr_* on the line of step k is the rate step k's update used (0-based step k - 1).
    for r in logged:
        factor = linear_schedule(r["step"] - 1, w, steps)
        assert r["lr_prompt"] == pytest.approx(0.05 * factor, abs=1e-12)
        assert r["lr_lowrank"] == pytest.approx(0.01 * factor, abs=1e-12)
    peak = max(logged, key=lambda r: r["lr_prompt"])
    assert peak["step"] == w + 1 and peak["lr_prompt"] == pytest.approx(0.05)
    assert linear_schedule(steps, w, steps) == 0.0  # reaches 0 where training stops
    assert logged[-1]["lr_prompt"] == pytest.approx(0.05 / (steps - w))


@pytest.mark.parametrize("task", ["demo", "rte"])
def test_accumulation_gives_the_large_batch_update(llama_dir, tmp_path, task):
    """batch 4 × 2 micro-batches = batch 8 × 1: the same examples and the same gradient, also when
    targets differ in length (RTE's label words), which a mean of per-micro-batch means gets wrong."""
    data = ["--task", "demo"]
    if task == "rte":
        write_rte(tmp_path / "glue")
        data = ["--task", "rte", "--data_dir", tmp_path / "glue"]
    common = ["train", "--model", llama_dir, *data, "--max_steps", 4, "--eval_steps", 100, "--save_steps", 100,
              "--eval_at_start", "false", "--no_test", "--max_eval_samples", 2, "--prompt_init", "random",
              "--learning_rate", 0.05, "--lora_embedding_lr", 0.01, "--max_seq_length", 48, "--logging_steps", 1]
    dept_cli(*common, "--output_dir", tmp_path / "b8", "--per_device_train_batch_size", 8)
    dept_cli(*common, "--output_dir", tmp_path / "b4x2", "--per_device_train_batch_size", 4,
             "--gradient_accumulation_steps", 2)
    assert max_abs_diff(final_tensors(tmp_path / "b8"), final_tensors(tmp_path / "b4x2")) < 1e-6
    losses = [[r["loss"] for r in read_jsonl(tmp_path / run / "metrics.jsonl") if "loss" in r]
              for run in ("b8", "b4x2")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_no_share_prefix_reaches_the_model(llama_dir):
    assert built(llama_dir)[0].share_prefix is True
    assert built(llama_dir, no_share_prefix=True)[0].share_prefix is False
