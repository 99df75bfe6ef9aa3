"""A trained adapter is one value: two adapters of two different custom tasks (both under the
default name "custom") live in one process, through the library, `dept predict` and `dept serve`,
and each reads its own fields and answers in its own label words."""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest
from fastapi.testclient import TestClient
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import dept_cli, dept_fails, llama_dir  # noqa: F401

from dept.cli.main import main
from dept.errors import UserError
from dept.trained import read_trained

QUICK = ["--max_steps", 2, "--eval_steps", 2, "--per_device_train_batch_size", 4, "--prompt_init", "random",
         "--max_length", 32]
# Two tasks of different fields and label words, both left under the default name.
SENTIMENT = {"field": "text", "words": "neg=bad,pos=good", "labels": {"bad", "good"},
             "rows": [{"text": f"film {i} was {'fine' if i % 2 else 'awful'}", "y": "pos" if i % 2 else "neg"}
                      for i in range(16)]}
TOPIC = {"field": "headline", "words": "sport=football,tech=computers", "labels": {"football", "computers"},
         "rows": [{"headline": f"{'match' if i % 2 else 'chip'} news {i}", "y": "sport" if i % 2 else "tech"}
                  for i in range(16)]}


@pytest.fixture(scope="module")
def two_adapters(llama_dir, tmp_path_factory):
    """{'sentiment': folder, 'topic': folder} trained on the tiny Llama, in one adapters folder."""
    root = tmp_path_factory.mktemp("custom_adapters")
    for name, task in (("sentiment", SENTIMENT), ("topic", TOPIC)):
        data = tmp_path_factory.mktemp(name) / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in task["rows"]))
        run = root.parent / f"{name}_run"
        dept_cli("train", "--model", llama_dir, "--train_file", data, "--input_template",
                 f"{name}: {{{task['field']}}}", "--label_column", "y", "--label_words", task["words"],
                 "--output_dir", run, *QUICK)
        (root / name).mkdir()
        for file in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy(run / file, root / name)
    return {"sentiment": root / "sentiment", "topic": root / "topic", "root": root}


def test_each_adapter_keeps_its_own_task_in_the_library(two_adapters):
    sentiment = read_trained(two_adapters["sentiment"])
    topic = read_trained(two_adapters["topic"])  # read second: it must not replace the first one's task
    assert sentiment.task.name == topic.task.name == "custom"
    assert set(sentiment.candidates) == SENTIMENT["labels"] and set(topic.candidates) == TOPIC["labels"]
    assert sentiment.source({"text": "a film"}, "row 1") == "sentiment: a film"
    assert topic.source({"headline": "a match"}, "row 1") == "topic: a match"
    with pytest.raises(UserError, match=r"missing field\(s\) \['text'\]"):
        sentiment.source({"headline": "a match"}, "row 1")


def _predict(adapter, record: dict, monkeypatch) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(record) + "\n"))
    printed = io.StringIO()
    monkeypatch.setattr(sys, "stdout", printed)
    assert main(["predict", "--adapter", str(adapter)]) == 0
    return json.loads(printed.getvalue())["prediction"]


def test_dept_predict_one_after_the_other_in_one_process(two_adapters, monkeypatch):
    for name, task in (("sentiment", SENTIMENT), ("topic", TOPIC), ("sentiment", SENTIMENT)):
        record = {task["field"]: "something new"}
        assert _predict(two_adapters[name], record, monkeypatch) in task["labels"], name


def test_dept_serve_classifies_each_with_its_own_fields_and_labels(two_adapters, llama_dir):
    from dept.cli.serve_cmd import ServeOptions, build

    app, _ = build(ServeOptions(adapters_dir=str(two_adapters["root"]), model_name_or_path=str(llama_dir)))
    with TestClient(app) as client:
        for name, task in (("sentiment", SENTIMENT), ("topic", TOPIC)):
            answer = client.post("/v1/classify", json={"model": name, "input": [{task["field"]: "something new"}]})
            assert answer.status_code == 200, answer.text
            row = answer.json()["data"][0]
            assert set(row["scores"]) == task["labels"] and row["label"] in task["labels"]
        wrong = client.post("/v1/classify", json={"model": "sentiment", "input": [{"headline": "x"}]})
        assert wrong.status_code == 400 and "text" in wrong.json()["error"]["message"]


def test_an_adapter_naming_no_base_model_is_one_line_everywhere(two_adapters, tmp_path):
    folder = tmp_path / "nameless"
    shutil.copytree(two_adapters["sentiment"], folder)
    record = json.loads((folder / "adapter_config.json").read_text())
    record["base_model_name_or_path"] = ""
    (folder / "adapter_config.json").write_text(json.dumps(record))
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "a film"}\n')
    for command in (["eval", "--adapter", folder, "--test_file", inputs], ["inspect", folder],
                    ["predict", "--adapter", folder, "--input", inputs], ["serve", "--adapter", f"a={folder}"]):
        assert "does not name its base model; pass --model" in dept_fails(*command), command
