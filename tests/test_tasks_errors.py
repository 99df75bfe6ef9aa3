"""Bad input: every error names the file, the line (or item) and what was expected."""

from __future__ import annotations

import gzip
import json
import re

import pytest
from test_tasks_files import multirc_passages, write_jsonl, write_mrqa, write_qqp, write_tsv

from dept.tasks import TaskDataError, TaskError, find_tasks, get_task, load_task

RTE_HEADER = ["index", "sentence1", "sentence2", "label"]


def rte(tmp_path, rows, header=RTE_HEADER):
    write_tsv(tmp_path / "RTE" / "train.tsv", header, rows)
    write_tsv(tmp_path / "RTE" / "dev.tsv", RTE_HEADER, [[0, "a", "b", "entailment"]])
    return tmp_path


def error_of(*args, **kw) -> str:
    with pytest.raises(TaskDataError) as info:
        load_task(*args, **kw)
    return str(info.value)


def test_missing_folder(tmp_path):
    message = error_of("rte", "train", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message and "data directory not found" in message


def test_missing_file_says_what_was_looked_for(tmp_path):
    (tmp_path / "RTE").mkdir()
    message = error_of("rte", "train", tmp_path)
    assert "no train file for task 'rte'" in message and "RTE/train.tsv" in message


def test_wrong_column_count_names_file_and_line(tmp_path):
    rte(tmp_path, [[0, "a", "b", "entailment"], [1, "a", "entailment"]])
    message = error_of("rte", "train", tmp_path)
    assert re.search(r"RTE/train\.tsv, line 3: expected 4 tab-separated columns .* found 3", message)


def test_unknown_label_names_file_line_and_expected_labels(tmp_path):
    rte(tmp_path, [[0, "a", "b", "entailment"], [1, "a", "b", "maybe"]])
    message = error_of("rte", "train", tmp_path)
    assert "RTE/train.tsv, line 3: unknown label 'maybe'" in message
    assert "'entailment', 'not_entailment'" in message


def test_header_without_expected_column(tmp_path):
    rte(tmp_path, [[0, "a", "b", "entailment"]], header=["index", "premise", "hypothesis", "label"])
    message = error_of("rte", "train", tmp_path)
    assert "RTE/train.tsv, line 1: header lacks column(s) ['sentence1', 'sentence2']" in message


def test_empty_line_in_a_tsv_is_a_malformed_row(tmp_path):
    path = rte(tmp_path, [[0, "a", "b", "entailment"]]) / "RTE" / "train.tsv"
    path.write_text(path.read_text() + "\n1\ta\tb\tentailment\n")
    assert "train.tsv, line 3: expected 4 tab-separated columns" in error_of("rte", "train", tmp_path)


def test_stsb_score_out_of_range(tmp_path):
    header = "index genre filename year old_index source1 source2 sentence1 sentence2 score".split()
    write_tsv(tmp_path / "STS-B" / "train.tsv", header, [[0, "g", "f", "y", 0, "n", "n", "a", "b", "7.5"]])
    assert "STS-B/train.tsv, line 2: label '7.5' is not a number from 0.0 to 5.0" in error_of(
        "stsb", "train", tmp_path)


def test_malformed_json_line(tmp_path):
    (tmp_path / "CB").mkdir()
    (tmp_path / "CB" / "train.jsonl").write_text('{"premise": "a", "hypothesis": "b", "label": "neutral"}\n{oops\n')
    assert "CB/train.jsonl, line 2: malformed JSON" in error_of("cb", "train", tmp_path)


def test_missing_key_and_wrong_type(tmp_path):
    write_jsonl(tmp_path / "CB" / "train.jsonl", [{"premise": "a", "label": "neutral"}])
    assert "CB/train.jsonl, line 1: missing column or key 'hypothesis'" in error_of("cb", "train", tmp_path)
    write_jsonl(tmp_path / "CB" / "train.jsonl", [{"premise": "a", "hypothesis": 3, "label": "neutral"}])
    assert "line 1: field 'hypothesis' should be str, found int 3" in error_of("cb", "train", tmp_path)


def test_multirc_missing_nested_keys(tmp_path):
    write_jsonl(tmp_path / "MultiRC" / "train.jsonl", [{"idx": 5, "passage": {}}])
    assert "MultiRC/train.jsonl, line 1: expected passage.text to be a str" in error_of(
        "multirc", "train", tmp_path)
    passage = multirc_passages()[1]
    del passage["passage"]["questions"][0]["answers"][1]["label"]
    write_jsonl(tmp_path / "MultiRC" / "train.jsonl", [multirc_passages()[0], passage])
    assert "line 2: missing key passage.questions[0].answers[1].label" in error_of(
        "multirc", "train", tmp_path)


def test_mrqa_errors(tmp_path):
    write_mrqa(tmp_path)
    path = tmp_path / "mrqa" / "train" / "NewsQA.jsonl.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    path.write_bytes(gzip.compress("\n".join(lines[1:]).encode()))
    assert "NewsQA.jsonl.gz, line 1: expected the MRQA header line" in error_of(
        "newsqa", "train", tmp_path, protocol="official")
    context = json.loads(lines[2])
    context["qas"][0]["answers"] = []
    path.write_bytes(gzip.compress("\n".join([lines[0], json.dumps(context)]).encode()))
    assert "line 2: expected a non-empty list of answer strings" in error_of(
        "newsqa", "train", tmp_path, protocol="official")
    path.write_bytes(b"not gzip")
    assert "NewsQA.jsonl.gz: cannot read file" in error_of("newsqa", "train", tmp_path, protocol="official")


def test_not_utf8_names_the_line(tmp_path):
    rte(tmp_path, [[0, "a", "b", "entailment"]])
    path = tmp_path / "RTE" / "train.tsv"
    path.write_bytes(path.read_bytes() + b"1\ta\xff\tb\tentailment\n")
    assert "RTE/train.tsv, line 3: not UTF-8 text" in error_of("rte", "train", tmp_path)


def test_find_tasks_raises_on_a_malformed_file(tmp_path):
    write_qqp(tmp_path)
    with open(tmp_path / "QQP" / "dev.tsv", "a") as f:
        f.write("9\t1\t2\tq1\tq2\t5\n")
    with pytest.raises(TaskDataError, match=r"QQP/dev.tsv, line 6: unknown label '5'"):
        find_tasks(tmp_path)


def test_wrong_requests_are_task_errors(tmp_path):
    with pytest.raises(TaskError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(TaskError, match="pass data_dir .* or from_hub=True"):
        load_task("rte", "train")
    with pytest.raises(TaskError, match="task 'rte' has no labelled official test split"):
        load_task("rte", "test", tmp_path, protocol="official")
    with pytest.raises(TaskError, match="split must be one of"):
        load_task("rte", "dev", tmp_path)
    with pytest.raises(TaskError, match="protocol must be one of"):
        load_task("rte", "train", tmp_path, protocol="mine")
    with pytest.raises(TaskError, match="target_words must be one of"):
        load_task("rte", "train", tmp_path, target_words="words")


def test_k_shot_errors(tmp_path):
    rte(tmp_path, [[i, "a", "b", "entailment"] for i in range(5)] + [[5, "a", "b", "not_entailment"]])
    with pytest.raises(TaskError, match="k_shot=4 needs 2 rows of class 'not_entailment' but the split has 1"):
        load_task("rte", "train", tmp_path, k_shot=4)
    with pytest.raises(TaskError, match="k_shot=7 but the split has only 6 rows"):
        load_task("rte", "train", tmp_path, k_shot=7)
    with pytest.raises(TaskError, match="k_shot must be a positive integer"):
        load_task("rte", "train", tmp_path, k_shot=0)


def test_holdout_needs_more_than_1000_training_rows(tmp_path):
    write_qqp(tmp_path)
    with pytest.raises(TaskError, match="holds out 1000 training rows .* has only 6"):
        load_task("qqp", "train", tmp_path)
