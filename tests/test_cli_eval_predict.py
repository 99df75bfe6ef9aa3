"""`dept eval` and `dept predict` on adapters written by `dept train`."""

from __future__ import annotations

import io
import json
import sys

import pytest
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import dept_cli, dept_fails, llama_dir, results, t5_dir, trained_run, write_rte  # noqa: F401

from dept.cli.main import main
from dept.tasks import compute_metrics, load_task

INPUTS = ["A wonderful, moving film.", "Dull and far too long.", "I laughed the whole way through."]


@pytest.fixture(scope="module")
def rank_run(llama_dir, tmp_path_factory):
    return trained_run(llama_dir, tmp_path_factory)


@pytest.mark.parametrize("decoder, model", [("rank", "llama"), ("generate", "llama"), ("generate", "t5")])
def test_eval_reports_the_trainers_best_validation(decoder, model, llama_dir, t5_dir, tmp_path_factory):
    extra = () if decoder == "rank" else ("--decoder", "generate")
    out = trained_run(llama_dir if model == "llama" else t5_dir, tmp_path_factory, *extra)
    metrics = dept_cli("eval", "--adapter", out, "--task", "demo", "--max_eval_samples", 16)
    best = results(out)["best_validation"]
    assert metrics == {"task": "demo", "split": "validation", "examples": 16, "decoder": decoder,
                       "accuracy": best["accuracy"]}


def test_eval_rebuilds_the_split_training_held_out(llama_dir, tmp_path):
    """RTE's paper validation set is a seeded half of the official dev set: eval uses the training seed."""
    write_rte(tmp_path / "glue", rows=24)
    out = tmp_path / "rte"
    dept_cli("train", "--model", llama_dir, "--task", "rte", "--data_dir", tmp_path / "glue", "--split_seed", 7,
             "--output_dir", out, "--max_steps", 2, "--eval_steps", 2, "--per_device_train_batch_size", 4,
             "--prompt_init", "random", "--max_seq_length", 48)
    metrics = dept_cli("eval", "--adapter", out, "--data_dir", tmp_path / "glue")
    assert metrics["accuracy"] == results(out)["best_validation"]["accuracy"] and metrics["examples"] == 4
    held_out = {e.source for e in load_task("rte", "validation", tmp_path / "glue", seed=7)}
    assert held_out != {e.source for e in load_task("rte", "validation", tmp_path / "glue", seed=42)}
    test = dept_cli("eval", "--adapter", out, "--data_dir", tmp_path / "glue", "--split", "test")
    assert test["accuracy"] == results(out)["test"]["accuracy"]


def test_eval_errors_are_one_line(rank_run, tmp_path, capsys):
    for args, message in [(["--adapter", str(tmp_path / "none")], "no such adapter folder"),
                          (["--adapter", str(rank_run), "--task", "rte"], "pass data_dir")]:
        assert message in dept_fails("eval", *args)


def predictions(printed: str) -> list[dict]:
    return [json.loads(line) for line in printed.splitlines()]


def test_predict_from_a_file_and_from_stdin(rank_run, tmp_path, capsys, monkeypatch):
    lines = [json.dumps({"source": INPUTS[0], "id": 1}), "", INPUTS[1], json.dumps({"source": INPUTS[2]})]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert main(["predict", "--adapter", str(rank_run), "--input", str(path)]) == 0
    from_file = predictions(capsys.readouterr().out)
    assert [p["source"] for p in from_file] == INPUTS  # one line per input; blank lines skipped
    assert {p["prediction"] for p in from_file} <= {"positive", "negative"}

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["predict", "--adapter", str(rank_run)]) == 0
    assert predictions(capsys.readouterr().out) == from_file


def test_predictions_score_like_eval(rank_run, tmp_path, capsys):
    examples = load_task("demo", "validation")[:16]
    path = tmp_path / "validation.jsonl"
    path.write_text("".join(json.dumps({"source": e.source}) + "\n" for e in examples))
    assert main(["predict", "--adapter", str(rank_run), "--input", str(path), "--per_device_eval_batch_size", "5"]) == 0
    predicted = [p["prediction"] for p in predictions(capsys.readouterr().out)]
    best = results(rank_run)["best_validation"]
    assert compute_metrics("demo", predicted, examples) == {"accuracy": best["accuracy"]}


@pytest.mark.parametrize("bad, message", [
    ('{"source": "fine"}\n{"source": "broken\n', "line 2: invalid JSON"),
    ('\n\n{"text": "no source"}\n', "line 3: missing field(s) ['sentence']; task demo reads ['sentence']"),
    ('{"source": 5}\n', "line 1: field 'source' must be a string"),
    ('["a list"]\n', "line 1: expected a JSON object of fields, got a JSON list"),
    ('"a string"\n', "line 1: expected a JSON object of fields, got a JSON str"),
])
def test_predict_names_the_bad_line(rank_run, tmp_path, bad, message, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(bad)
    assert dept_fails("predict", "--adapter", rank_run, "--input", path).startswith(f"dept predict: {path}, {message}")
    assert capsys.readouterr().out == ""  # nothing predicted before the whole input is read


def test_predict_errors_are_one_line(rank_run, tmp_path):
    assert "cannot read" in dept_fails("predict", "--adapter", rank_run, "--input", tmp_path / "missing.jsonl")
    (tmp_path / "in.jsonl").write_text("text\n")
    assert "no such adapter folder" in dept_fails("predict", "--adapter", tmp_path / "none",
                                                  "--input", tmp_path / "in.jsonl")


def test_a_regression_head_is_read_on_the_tasks_scale():
    """STS-B scores run 0 to 5: a head's 5.3 means 5. Unclipped, the metrics would take it for an
    invalid answer and score it as the far end of the scale (0)."""
    from types import SimpleNamespace

    import torch
    from helpers_tiny import tiny_dept, tiny_tokenizer

    from dept.data import Collator
    from dept.evaluation import evaluate, predict

    model = tiny_dept("encoder", num_labels=1)
    collator = Collator(tiny_tokenizer(), model.family, 16)
    words = "the movie was wonderful negative positive this text is not".split()
    examples = [SimpleNamespace(source=" ".join(words[i:i + 4]), target="", label=float(i % 6))
                for i in range(7)]
    head = model.dept_adapters["default"].head
    with torch.no_grad():  # centre the outputs on 5, the top of the scale
        head.bias.zero_()
        head.bias.fill_(5.0 - sorted(float(p) for p in predict(model, collator, examples))[3])
    raw = [float(p) for p in predict(model, collator, examples)]
    assert max(raw) > 5 and min(raw) < 5  # some past the scale's end
    clipped = predict(model, collator, examples, score_range=(0.0, 5.0))
    assert clipped == [f"{min(max(v, 0.0), 5.0):.3f}" for v in raw]
    assert evaluate(model, collator, "stsb", examples) == compute_metrics("stsb", clipped, examples)
