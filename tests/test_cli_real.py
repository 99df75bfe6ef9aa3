"""`dept train` on the real GLUE files in ../shared/data (tiny models), and one short run of the
real packaged SmolLM2-135M."""

from __future__ import annotations

import json
import math

import pytest
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import (adapter_tensors, bert_dir, dept_cli, llama_dir, read_jsonl, results,  # noqa: F401
                           validation_lines)

from dept.tasks import load_task


def test_rte_from_the_real_glue_files(llama_dir, shared_data, tmp_path):
    glue = shared_data / "glue"
    out = tmp_path / "rte"
    dept_cli("train", "--model", llama_dir, "--task", "rte", "--data_dir", glue, "--output_dir", out,
             "--max_train_samples", 32, "--max_eval_samples", 16, "--max_steps", 4, "--eval_steps", 2,
             "--save_steps", 2, "--per_device_train_batch_size", 4, "--max_seq_length", 128,
             "--prompt_init", "random")
    r = results(out)
    assert r["task"] == "rte" and r["train_examples"] == 32 and r["steps"] == 4
    assert [x["step"] for x in validation_lines(out)] == [0, 2, 4]
    assert 0 <= r["test"]["accuracy"] <= 1
    assert all(math.isfinite(x["loss"]) for x in read_jsonl(out / "metrics.jsonl") if "loss" in x)
    # the paper's RTE protocol: validation and test are the two seeded halves of the official dev set
    validation = load_task("rte", "validation", glue)
    assert len(validation) == 138 and len(load_task("rte", "test", glue)) == 139
    evaluated = dept_cli("eval", "--adapter", out, "--data_dir", glue, "--max_eval_samples", 16)
    assert evaluated["accuracy"] == r["best_validation"]["accuracy"]


def test_sst2_on_an_encoder_from_the_real_glue_files(bert_dir, shared_data, tmp_path):
    out = tmp_path / "sst2"
    dept_cli("train", "--model", bert_dir, "--task", "sst2", "--data_dir", shared_data / "glue", "--output_dir",
             out, "--max_train_samples", 32, "--max_eval_samples", 16, "--max_steps", 3, "--eval_steps", 3,
             "--per_device_train_batch_size", 8, "--max_seq_length", 64, "--prompt_init", "random")
    r = results(out)
    assert r["task"] == "sst2" and r["train_examples"] == 32 and 0 <= r["test"]["accuracy"] <= 1
    assert json.loads((out / "adapter_config.json").read_text())["num_labels"] == 2


@pytest.mark.slow
def test_smollm2_short_run_on_the_demo_task(tmp_path):
    out = tmp_path / "smollm2"
    dept_cli("train", "--model", "smollm2-135m", "--task", "demo", "--output_dir", out, "--max_steps", 2,
             "--eval_steps", 2, "--save_steps", 2, "--logging_steps", 1, "--per_device_train_batch_size", 2,
             "--max_eval_samples", 4, "--max_seq_length", 64, "--eval_at_start", "false")
    r = results(out)
    assert r["steps"] == 2 and r["best_step"] == 2 and 0 <= r["test"]["accuracy"] <= 1
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m" and config["hidden_size"] == 576
    m, s, rank = config["prompt_length"], config["max_length"], config["rank"]
    assert r["trainable_params"] == m * 576 + (s + 576) * rank
    assert {k: tuple(v.shape) for k, v in adapter_tensors(out).items()} == {
        "prompt": (m, 576), "lora_a": (s, rank), "lora_b": (rank, 576)}
    losses = [x["loss"] for x in read_jsonl(out / "metrics.jsonl") if "loss" in x]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)
