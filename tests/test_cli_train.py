"""`dept train` end to end on tiny models: the files it writes, YAML configs, the four methods,
the three model families, both decoders, transfer (--init_from) and few-shot."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import (QUICK, adapter_tensors, bert_dir, dept_cli, dept_fails, final_tensors, llama_dir,  # noqa: F401
                           read_jsonl, results, t5_dir, trained_run, validation_lines)
from safetensors.torch import load_file

from dept.cli.main import main
from dept.config import DeptConfig
from dept.model import DeptModel
from dept.training.options import LOWRANK_LR_PER_RMS, PROMPT_LR_PER_RMS, TrainOptions

D = 32  # hidden size of the tiny models


@pytest.fixture(scope="module")
def run(llama_dir, tmp_path_factory):
    return trained_run(llama_dir, tmp_path_factory)


def test_writes_adapter_results_metrics_and_curves(run, llama_dir):
    names = {p.name for p in run.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "results.json", "metrics.jsonl", "curves.png",
            "best_trainable.safetensors", "checkpoint"} <= names
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    config = json.loads((run / "adapter_config.json").read_text())
    assert config["method"] == "dept" and config["base_model_name_or_path"] == str(llama_dir)
    assert config["task"] == {"task": "demo", "target_words": "natural", "decoder": "rank", "protocol": "paper",
                              "split_seed": 42}
    m, r, s = config["prompt_length"], config["rank"], config["max_length"]
    assert (m, s, config["prompt_init"]) == (60, 256, "random")
    tensors = adapter_tensors(run)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {"prompt": (m, D), "lora_a": (s, r), "lora_b": (r, D)}

    r_json = results(run)
    assert r_json["trainable_params"] == m * D + (s + D) * r == 100 * D - 128  # the budget of l = 100, rounded down
    assert set(r_json["options"]) == set(TrainOptions().flat())
    assert r_json["options"]["max_steps"] == 6 and r_json["options"]["per_device_train_batch_size"] == 4
    assert r_json["task"] == "demo" and r_json["main_metric"] == "accuracy" and r_json["steps"] == 6
    assert "qa_scoring" not in r_json  # only QA runs record how answers were scored
    assert r_json["train_examples"] == 480 and r_json["processes"] == 1
    assert r_json["train_seconds"] > 0 and r_json["train_examples_per_second"] > 0
    assert set(r_json["test"]) == {"accuracy"} and 0 <= r_json["test"]["accuracy"] <= 1
    assert r_json["before_training"] == {"accuracy": validation_lines(run)[0]["accuracy"]}
    # The rates as resolved (the scale-aware defaults here), not the schedule's 0.0 at warmup step 0.
    rates = r_json["learning_rates"]
    assert set(rates) == {"prompt", "lowrank"} and rates["lowrank"] > 0
    assert rates["prompt"] / rates["lowrank"] == pytest.approx(PROMPT_LR_PER_RMS / LOWRANK_LR_PER_RMS)
    logged = [line["lr_prompt"] for line in read_jsonl(run / "metrics.jsonl") if "lr_prompt" in line]
    assert logged and max(logged) <= rates["prompt"] * (1 + 1e-9)


def test_test_predictions_are_kept_in_split_order_and_score_as_the_results(run):
    from dept.tasks import compute_metrics, load_task
    from dept.training.outputs import TEST_PREDICTIONS, read_predictions

    predictions = read_predictions(run / TEST_PREDICTIONS)
    options = results(run)["options"]
    test = load_task("demo", "test", seed=options["split_seed"])[:options["max_eval_samples"]]
    assert len(predictions) == len(test) and set(predictions) <= {"negative", "positive"}
    assert compute_metrics("demo", predictions, test) == results(run)["test"]


def test_metrics_log_has_training_and_evaluation_lines(run):
    lines = read_jsonl(run / "metrics.jsonl")
    train = [x for x in lines if "loss" in x]
    assert [x["step"] for x in train] == [2, 4, 6]
    for x in train:
        assert set(x) == {"step", "loss", "lr_prompt", "lr_lowrank", "examples_per_second"}
        assert torch.isfinite(torch.tensor(x["loss"])) and x["examples_per_second"] > 0
    assert [x["step"] for x in validation_lines(run)] == [0, 3, 6]
    (test,) = [x for x in lines if x.get("split") == "test"]
    assert test["step"] == results(run)["best_step"] and test["accuracy"] == results(run)["test"]["accuracy"]


def test_best_step_and_adapter_are_the_best_validation(run):
    scores = [(x["accuracy"], -x["step"]) for x in validation_lines(run)]
    best_score, minus_step = max(scores)  # the first of equal scores wins
    r = results(run)
    assert r["best_step"] == -minus_step and r["best_validation"]["accuracy"] == best_score
    best = load_file(str(run / "best_trainable.safetensors"))
    adapter = adapter_tensors(run)
    assert {k: best["dept_adapters.default." + k] for k in adapter}.keys() == adapter.keys()
    for k, v in adapter.items():
        assert torch.equal(best["dept_adapters.default." + k], v)


def test_prints_a_summary(llama_dir, tmp_path, capsys):
    assert main(["train", "--model", str(llama_dir), *map(str, QUICK), "--output_dir", str(tmp_path / "o"),
                 "--max_steps", "3"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["best_step"] in (0, 3) and summary["validation_before"] == results(tmp_path / "o")["before_training"]
    assert "adapter and results in" in captured.err


# ----- YAML configs ---------------------------------------------------------------------

def test_yaml_config_with_aliases_and_flags_over_it(llama_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {llama_dir}\ntask: demo\nprefix_length: 5\nrank: 2\nmax_steps: 4\n"
                      f"eval_steps: 2\nsave_steps: 2\nbatch_size: 4\nmax_eval_samples: 8\nprompt_init: random\n"
                      f"learning_rate: 3e-2\neval_at_start: false\n")
    dept_cli("train", "--config", config, "--output_dir", tmp_path / "o", "--max_steps", 2)
    options = results(tmp_path / "o")["options"]
    assert options["model_name_or_path"] == str(llama_dir) and options["prompt_length"] == 5 and options["rank"] == 2
    assert options["per_device_train_batch_size"] == 4
    assert options["learning_rate"] == 0.03  # PyYAML reads 3e-2 as a string; read as the flag would be
    assert options["max_steps"] == 2 and results(tmp_path / "o")["steps"] == 2  # the flag wins
    assert results(tmp_path / "o")["trainable_params"] == 5 * D + (256 + D) * 2
    assert [x["step"] for x in validation_lines(tmp_path / "o")] == [2]


def test_yaml_unknown_key_is_an_error_naming_it(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("task: demo\nlearning_rat: 0.1\n")
    message = dept_fails("train", "--config", config, "--output_dir", tmp_path / "o")
    assert "learning_rat" in message and str(config) in message
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("line, message", [
    ("method: loar", "option method: must be one of ['dept', 'pt', 'lora', 'full'], got 'loar'"),
    ("max_steps: many", "option max_steps: expected int, got 'many'"),
    ("eval_steps: 0", "option eval_steps: must be at least 1, got 0"),
    ("resume: maybe", "option resume: expected bool, got 'maybe'"),
])
def test_yaml_bad_values_are_errors_naming_the_option(tmp_path, line, message):
    config = tmp_path / "run.yaml"
    config.write_text(f"task: demo\n{line}\n")
    assert message in dept_fails("train", "--config", config, "--output_dir", tmp_path / "o")


def test_flag_values_are_checked_too(tmp_path, capsys):
    assert "option max_steps: must be at least 1" in dept_fails("train", "--max_steps", 0,
                                                                "--output_dir", tmp_path / "o")
    with pytest.raises(SystemExit):
        main(["train", "--method", "loar"])
    assert "invalid choice: 'loar'" in capsys.readouterr().err


# ----- methods, families, decoders ----------------------------------------------------

@pytest.mark.parametrize("method, files, trainable, group", [
    ("pt", {"adapter_config.json", "adapter_model.safetensors"}, 7 * D, "prompt"),
    # PEFT's LoRA on q_proj (32 -> 32) and v_proj (32 -> 16) of 2 layers, rank 8
    ("lora", {"adapter_config.json", "adapter_model.safetensors"}, 2 * (8 * 64 + 8 * 48), "lora"),
    ("full", {"config.json", "model.safetensors"}, None, "full"),
])
def test_baselines_run_through_the_same_loop(llama_dir, tmp_path, method, files, trainable, group):
    out = tmp_path / method
    dept_cli("train", "--model", llama_dir, *QUICK, "--output_dir", out, "--method", method, "--prompt_length", 7,
             "--logging_steps", 3)
    r = results(out)
    assert files <= {p.name for p in out.iterdir()} and r["steps"] == 6 and "accuracy" in r["test"]
    if method == "pt":
        assert json.loads((out / "adapter_config.json").read_text())["rank"] == 0
    if method == "lora":
        assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    if method == "full":
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(llama_dir)
        trainable = sum(p.numel() for p in base.parameters())
    assert r["trainable_params"] == trainable
    logged = [x for x in read_jsonl(out / "metrics.jsonl") if "loss" in x]
    assert [x["step"] for x in logged] == [3, 6] and all(f"lr_{group}" in x for x in logged)


@pytest.mark.parametrize("family", ["t5", "bert"])
def test_encoder_decoder_and_encoder_models(family, t5_dir, bert_dir, tmp_path):
    model_dir = t5_dir if family == "t5" else bert_dir
    out = tmp_path / family
    dept_cli("train", "--model", model_dir, *QUICK, "--output_dir", out, "--prompt_length", 4, "--r", 2,
             "--max_seq_length", 64)
    config = json.loads((out / "adapter_config.json").read_text())
    head = D * 2 + 2 if family == "bert" else 0  # the encoder's 2-class head
    assert config["model_family"] == ("seq2seq" if family == "t5" else "encoder")
    assert config["num_labels"] == (2 if family == "bert" else None)
    assert results(out)["trainable_params"] == 4 * D + (64 + D) * 2 + head
    lr_names = {k for x in read_jsonl(out / "metrics.jsonl") if "loss" in x for k in x if k.startswith("lr_")}
    assert lr_names == ({"lr_prompt", "lr_lowrank", "lr_head"} if family == "bert" else {"lr_prompt", "lr_lowrank"})


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_generate_decoder(family, llama_dir, t5_dir, tmp_path_factory):
    out = trained_run(llama_dir if family == "llama" else t5_dir, tmp_path_factory, "--decoder", "generate")
    assert json.loads((out / "adapter_config.json").read_text())["task"]["decoder"] == "generate"
    accuracies = [x["accuracy"] for x in validation_lines(out)] + [results(out)["test"]["accuracy"]]
    assert all(0 <= a <= 1 for a in accuracies)  # a random model generates no label: invalid counts as wrong


# ----- transfer and few-shot ----------------------------------------------------------

@pytest.fixture(scope="module")
def source_adapter(llama_dir, tmp_path_factory):
    """A source-task adapter with non-trivial tensors (random prompt and B), saved as dept train would."""
    model = DeptModel.from_pretrained(str(llama_dir), DeptConfig(prompt_length=6, rank=3, max_length=256,
                                                                 prompt_init="random", seed=5))
    with torch.no_grad():
        model.dept_adapters["default"].lora_b.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    out = tmp_path_factory.mktemp("source")
    model.save_adapter(out, task="demo", target_words="natural", decoder="rank")
    return out


def test_init_from_starts_from_the_source_adapter(llama_dir, source_adapter, tmp_path):
    out = tmp_path / "transfer"
    # With learning rates 0 the tensors must stay the source's, exactly.
    dept_cli("train", "--model", llama_dir, "--task", "demo", "--output_dir", out, "--init_from", source_adapter,
             "--learning_rate", 1e-30, "--lora_embedding_lr", 1e-30, "--max_steps", 2, "--eval_steps", 2,
             "--max_eval_samples", 16, "--per_device_train_batch_size", 4)
    source = adapter_tensors(source_adapter)
    for name, tensor in final_tensors(out).items():
        assert torch.equal(tensor, source[name.removeprefix("dept_adapters.default.")])
    evaluated = dept_cli("eval", "--adapter", source_adapter, "--max_eval_samples", 16)
    assert validation_lines(out)[0] == {"step": 0, "split": "validation", "accuracy": evaluated["accuracy"]}
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["prompt_length"], config["rank"]) == (6, 3)  # the source's shape, not the options'


def test_init_from_through_its_yaml_alias(llama_dir, source_adapter, tmp_path):
    config = tmp_path / "transfer.yaml"
    config.write_text(f"peft_model_id: {source_adapter}\nmodel_name_or_path: {llama_dir}\n")
    out = tmp_path / "o"
    dept_cli("train", "--config", config, *QUICK, "--output_dir", out, "--max_steps", 3, "--eval_at_start", "true")
    assert results(out)["options"]["init_from"] == str(source_adapter)
    evaluated = dept_cli("eval", "--adapter", source_adapter, "--max_eval_samples", 16)
    assert validation_lines(out)[0]["accuracy"] == evaluated["accuracy"]


def test_init_from_an_adapter_of_another_model_is_a_clear_error(t5_dir, source_adapter, tmp_path):
    assert "trained for" in dept_fails("train", "--model", t5_dir, *QUICK, "--output_dir", tmp_path / "o",
                                       "--init_from", source_adapter)


def test_init_from_keeps_the_source_adapters_input_length(llama_dir, tmp_path):
    """The source adapter's s (12 here) decides truncation, not --max_seq_length (default 256): the model
    would otherwise drop every token past the 12th, the decoder-only cue "Label:" included."""
    from dept.data import Collator
    from dept.tasks import load_task
    from dept.training.stream import stream_indices

    model = DeptModel.from_pretrained(str(llama_dir), DeptConfig(prompt_length=4, rank=2, max_length=12,
                                                                 prompt_init="random", seed=3))
    with torch.no_grad():
        model.dept_adapters["default"].lora_b.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    model.save_adapter(tmp_path / "short", task="demo", target_words="natural", decoder="rank")
    out = tmp_path / "o"
    dept_cli("train", "--model", llama_dir, "--task", "demo", "--output_dir", out, "--init_from", tmp_path / "short",
             "--max_steps", 1, "--eval_steps", 1, "--logging_steps", 1, "--max_eval_samples", 4,
             "--per_device_train_batch_size", 4)
    # the first step's loss, by hand: its 4 examples, cut to the adapter's 12 tokens
    train = load_task("demo", "train")
    batch = Collator(model.tokenizer, model.family, 12)([train[i] for i in stream_indices(0, 4, len(train), 42)])
    assert max(int(m.sum()) for m in batch["source_mask"]) == 12  # some inputs were cut
    with torch.no_grad():
        by_hand = model(**batch).loss.item()
    (logged,) = [x["loss"] for x in read_jsonl(out / "metrics.jsonl") if "loss" in x]
    assert logged == pytest.approx(by_hand, rel=1e-5)


def write_cb(folder) -> None:
    """A small SuperGLUE CB folder (3 classes)."""
    labels = ["entailment", "contradiction", "neutral"]
    (folder / "CB").mkdir(parents=True)
    for name, n in (("train.jsonl", 12), ("val.jsonl", 8)):
        rows = [{"premise": f"The {i} cats sat on the mat.", "hypothesis": f"There are {i % 4} cats.",
                 "label": labels[i % 3], "idx": i} for i in range(n)]
        (folder / "CB" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_init_from_an_encoder_adapter_of_another_label_set_starts_a_new_head(bert_dir, tmp_path_factory, tmp_path):
    source = trained_run(bert_dir, tmp_path_factory)  # demo: 2 classes
    write_cb(tmp_path / "superglue")
    out = tmp_path / "cb"
    dept_cli("train", "--model", bert_dir, "--task", "cb", "--data_dir", tmp_path / "superglue", "--output_dir", out,
             "--init_from", source, "--learning_rate", 1e-30, "--lora_embedding_lr", 1e-30, "--head_lr", 0.01,
             "--max_steps", 2, "--eval_steps", 2, "--per_device_train_batch_size", 4)
    assert json.loads((out / "adapter_config.json").read_text())["num_labels"] == 3
    before, after = adapter_tensors(source), adapter_tensors(out)
    assert after["head.weight"].shape == (3, D) and after["head.bias"].shape == (3,)
    for name in ("prompt", "lora_a", "lora_b"):
        assert torch.equal(after[name], before[name])  # transferred (a 1e-30 rate moves nothing in fp32)
    assert 0 <= results(out)["test"]["accuracy"] <= 1


def test_k_shot_trains_on_k_examples(llama_dir, tmp_path):
    out = tmp_path / "k"
    dept_cli("train", "--model", llama_dir, *QUICK, "--output_dir", out, "--k_shot_examples", 6, "--max_steps", 3,
             "--eval_steps", 3)
    r = results(out)
    assert r["train_examples"] == 6 and r["options"]["k_shot_examples"] == 6 and r["steps"] == 3
