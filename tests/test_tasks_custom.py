"""Your own task from files: every format, the template, inferred types, label words, the
errors a bad file gives, and the same task trained, evaluated and predicted through the CLI."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import bert_dir, dept_cli, dept_fails, llama_dir, results, t5_dir  # noqa: F401

from dept.cli.main import main
from dept.tasks import TaskDataError, TaskError, compute_metrics, load_task
from dept.tasks.custom import CustomTask, parse_label_words, read_rows

ROWS = [{"text": f"film {i} was {'good' if i % 2 else 'bad'}", "y": "pos" if i % 2 else "neg"} for i in range(24)]


def write(path, rows, kind=None):
    kind = kind or path.suffix[1:]
    if kind in ("csv", "tsv"):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if kind == "tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "json":
        path.write_text(json.dumps(rows))
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_every_format_reads_the_same_examples(tmp_path, ext):
    path = write(tmp_path / f"train.{ext}", ROWS)
    task = CustomTask(input_template="review: {text}", train_file=str(path), label_column="y",
                      label_words="neg=negative,pos=positive", name=f"mine_{ext}")
    loaded = task.load()
    examples = loaded.splits["train"] + loaded.splits["validation"]
    assert sorted((e.source, e.target, e.label) for e in examples) == sorted(
        (f"review: {r['text']}", "negative" if r["y"] == "neg" else "positive", int(r["y"] == "pos")) for r in ROWS)
    assert len(loaded.splits["validation"]) == 2 and loaded.splits["test"] == loaded.splits["validation"]
    assert any("validation split" in n for n in loaded.notes) and any("also the test split" in n for n in loaded.notes)


def test_the_validation_cut_is_fixed(tmp_path):
    path = write(tmp_path / "t.csv", ROWS)
    cut = [CustomTask(input_template="{text}", train_file=str(path), label_column="y").load().splits["validation"]
           for _ in range(2)]
    assert cut[0] == cut[1]


@pytest.mark.parametrize("labels, kind", [(["a", "b", "a"], "classification"), ([0, 1, 2, 1], "classification"),
                                          ([0.5, 1.25, 3.0], "regression"),
                                          ([f"answer {i}" for i in range(30)], "generation")])
def test_the_task_type_is_inferred_and_said(tmp_path, labels, kind):
    path = write(tmp_path / "t.jsonl", [{"text": f"x {i}", "label": v} for i, v in enumerate(labels)])
    task = CustomTask(input_template="{text}", train_file=str(path), validation_file=str(path), name=f"t_{kind}")
    loaded = task.load()
    assert task.task_type == kind and loaded.spec.kind == kind
    assert any(f"task_type inferred" in n and kind in n for n in loaded.notes)


def test_label_words_default_to_the_values_and_metrics_score_them(tmp_path):
    path = write(tmp_path / "t.csv", [{"text": "a", "label": "yes"}, {"text": "b", "label": "no"}])
    loaded = CustomTask(input_template="q: {text}", train_file=str(path), validation_file=str(path),
                        name="yn").load()
    assert [e.target for e in loaded.splits["train"]] == ["yes", "no"]
    assert compute_metrics(loaded.spec, ["yes", "yes"], loaded.splits["validation"])["accuracy"] == 0.5
    assert parse_label_words("0=negative, 1=positive") == {"0": "negative", "1": "positive"}
    with pytest.raises(TaskError, match="value=word pairs"):
        parse_label_words("negative,positive")


def test_generation_is_scored_with_rouge_l(tmp_path):
    rows = [{"text": f"q{i}", "answer": f"the answer is {i}"} for i in range(30)]
    path = write(tmp_path / "g.jsonl", rows)
    loaded = CustomTask(input_template="{text}", train_file=str(path), validation_file=str(path),
                        label_column="answer", name="gen").load()
    metrics = compute_metrics(loaded.spec, [e.target for e in loaded.splits["validation"]], loaded.splits["validation"])
    assert metrics == {"rougeL": 1.0, "em": 1.0, "f1": 1.0}
    half = compute_metrics(loaded.spec, ["the answer"] * 30, loaded.splits["validation"])["rougeL"]
    assert 0.5 < half < 1.0


def test_the_builtin_task_and_the_same_data_as_files_agree(tmp_path):
    """RTE's official files read as a built-in task and as a custom task file give the same inputs and targets."""
    from helpers_train import write_rte

    write_rte(tmp_path / "glue", rows=12)
    builtin = load_task("rte", "train", tmp_path / "glue")
    (tmp_path / "rte.yaml").write_text(
        "name: my_rte\ntrain_file: glue/RTE/train.tsv\nvalidation_file: glue/RTE/dev.tsv\n"
        "input_template: 'sentence1: {sentence1} sentence2: {sentence2}'\n"
        "label_words: {entailment: entailment, not_entailment: not_entailment}\n")
    custom = CustomTask.from_yaml(tmp_path / "rte.yaml").load().splits["train"]
    assert [(e.source, e.target) for e in custom] == [(e.source, e.target) for e in builtin]


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty"),
    ("text,label\n", "the file has no rows"),
    ("other,label\nx,1\n", "line 2: missing column(s) ['text']"),
    ("text,label\nfine,1\n,0\n", "line 3: empty input"),
    ("text,label\nfine,1\nalso fine,\n", "line 3: empty label"),
    ('text,label\n"unclosed,1\n', "cannot parse it"),
])
def test_bad_csv_files_are_one_error_naming_file_and_row(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TaskDataError) as err:
        CustomTask(input_template="{text}", train_file=str(path)).load()
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_bad_json_lines_are_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(TaskDataError, match=r"bad.jsonl, line 2: expected a JSON object, found list"):
        read_rows(str(path))
    path.write_text('{"text": "a", "label": 1}\n{"text": \n')
    with pytest.raises(TaskDataError, match=r"bad.jsonl, line 2: malformed JSON"):
        read_rows(str(path))


def test_a_label_unseen_in_training_is_an_error(tmp_path):
    train = write(tmp_path / "train.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    dev = write(tmp_path / "dev.csv", [{"text": "c", "label": "x"}, {"text": "d", "label": "z"}])
    with pytest.raises(TaskDataError, match=r"dev.csv, line 3: label 'z' never appears in the training file"):
        CustomTask(input_template="{text}", train_file=str(train), validation_file=str(dev)).load()


def test_skip_bad_rows_counts_and_names_them(tmp_path):
    rows = [{"text": "" if i in (2, 5) else f"t{i}", "label": str(i % 2)} for i in range(10)]
    path = write(tmp_path / "t.csv", rows)
    loaded = CustomTask(input_template="{text}", train_file=str(path), validation_file=str(path),
                        skip_bad_rows=True).load()
    assert len(loaded.splits["train"]) == 8
    assert any("skipped 2 bad row(s) (lines 4, 7)" in n for n in loaded.notes)


# ----- through the command line -----------------------------------------------------------
QUICK = ["--max_steps", 3, "--eval_steps", 3, "--per_device_train_batch_size", 4, "--prompt_init", "random",
         "--max_length", 32]


@pytest.mark.parametrize("kind", ["llama", "t5", "bert"])
def test_train_eval_predict_your_own_task(kind, llama_dir, t5_dir, bert_dir, tmp_path, monkeypatch, capsys):
    model = {"llama": llama_dir, "t5": t5_dir, "bert": bert_dir}[kind]
    train = write(tmp_path / "my.csv", ROWS[:20])
    dev = write(tmp_path / "dev.jsonl", ROWS[20:])
    out = tmp_path / "run"
    dept_cli("train", "--model", model, "--train_file", train, "--validation_file", dev,
             "--input_template", "review: {text}", "--label_column", "y", "--label_words", "neg=bad,pos=good",
             "--output_dir", out, *QUICK)
    assert "task_type inferred from 20 training labels (2 distinct): classification" in capsys.readouterr().err
    r = results(out)
    assert r["task"] == "custom" and r["train_examples"] == 20 and set(r["test"]) == {"accuracy", "f1_macro"}
    evaluated = dept_cli("eval", "--adapter", out, "--test_file", dev)
    assert evaluated["accuracy"] == r["test"]["accuracy"] and evaluated["examples"] == 4
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"text": "a great film"}\n'))
    printed = io.StringIO()
    monkeypatch.setattr(sys, "stdout", printed)
    assert main(["predict", "--adapter", str(out)]) == 0
    line = json.loads(printed.getvalue())
    assert line["source"] == "review: a great film" and line["prediction"] in ("bad", "good")


def test_a_task_file_trains_and_resumes(llama_dir, tmp_path, capsys):
    write(tmp_path / "my.jsonl", ROWS)
    (tmp_path / "task.yaml").write_text("name: reviews\ntrain_file: my.jsonl\ninput_template: 'review: {text}'\n"
                                        "label_column: y\nlabel_words: {neg: negative, pos: positive}\n")
    out = tmp_path / "run"
    args = ["train", "--model", llama_dir, "--task_file", tmp_path / "task.yaml", "--output_dir", out, *QUICK,
            "--save_steps", 2]
    dept_cli(*args)
    assert results(out)["task"] == "reviews"
    capsys.readouterr()
    dept_cli(*args, "--resume")
    assert "resuming from step 3 of 3" in capsys.readouterr().err
    assert "metric: None -> 'f1_macro'" in dept_fails(*args, "--resume", "--metric", "f1_macro")
    assert main(["tasks", "--show", str(tmp_path / "task.yaml"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["rows"] == {"train": 22, "validation": 2, "test": 2}
    assert sum(shown["label_balance"]["train"].values()) == 22


def test_train_file_errors_through_the_cli(llama_dir, tmp_path):
    train = write(tmp_path / "my.csv", ROWS)
    o = ["--output_dir", tmp_path / "o"]
    assert "--train_file needs --input_template" in dept_fails("train", "--model", llama_dir, "--train_file", train, *o)
    assert "missing column(s) ['review']" in dept_fails("train", "--model", llama_dir, "--train_file", train,
                                                         "--input_template", "{review}", "--label_column", "y", *o)
    assert "unknown file type '.txt'" in dept_fails("train", "--model", llama_dir, "--train_file",
                                                    tmp_path / "x.txt", "--input_template", "{text}", *o)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_real_sst2_rows_as_your_own_csv(shared_data, tmp_path, monkeypatch):
    """SST-2's real rows written as a CSV with other column names and label words, on SmolLM2."""
    lines = (shared_data / "glue" / "SST-2" / "train.tsv").read_text().splitlines()[1:161]
    rows = [{"review": s, "sentiment": "happy" if lab == "1" else "sad"} for s, lab in (l.split("\t") for l in lines)]
    train, dev = write(tmp_path / "train.csv", rows[:128]), write(tmp_path / "dev.csv", rows[128:])
    out = tmp_path / "run"
    dept_cli("train", "--model", "smollm2-135m", "--train_file", train, "--validation_file", dev,
             "--input_template", "review: {review}", "--label_column", "sentiment",
             "--label_words", "sad=negative,happy=positive", "--output_dir", out, "--max_steps", 4,
             "--eval_steps", 4, "--per_device_train_batch_size", 4, "--max_length", 64, "--vanilla_length", 20,
             "--prompt_length", 10)
    r = results(out)
    assert r["train_examples"] == 128 and r["test"]["accuracy"] == dept_cli(
        "eval", "--adapter", out, "--test_file", dev)["accuracy"]
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"review": rows[0]["review"]}) + "\n"))
    printed = io.StringIO()
    monkeypatch.setattr(sys, "stdout", printed)
    assert main(["predict", "--adapter", str(out)]) == 0
    assert json.loads(printed.getvalue())["prediction"] in ("negative", "positive")


@pytest.mark.parametrize("template, why", [
    ("{text:{text.__class__.__mro__}}", "may not hold another field"),
    ("{text:>{text.__len__}}", "may not hold another field"),
    ("{text.__class__}", "not a plain column name"),
    ("{text[0]}", "not a plain column name"),
    ("{0}", "not a plain column name"),
    ("{text!r}", "conversions are not allowed"),
    ("{text:d}", "cannot format text columns"),
])
def test_a_template_names_plain_fields_only(template, why):
    with pytest.raises(TaskError, match=why) as refused:
        CustomTask(input_template=template)
    assert str(refused.value).startswith(f"input_template {template!r}: ") and "<class" not in str(refused.value)
    assert CustomTask(input_template="review: {text:>8}").fields == ["text"]  # a simple spec is fine


def test_a_nested_field_template_is_one_line_through_the_cli(llama_dir, tmp_path):
    train = write(tmp_path / "my.csv", ROWS)
    line = dept_fails("train", "--model", llama_dir, "--train_file", train, "--label_column", "y",
                      "--input_template", "{text:{text.__class__.__mro__}}", "--output_dir", tmp_path / "o")
    assert "input_template '{text:{text.__class__.__mro__}}'" in line and "<class" not in line
