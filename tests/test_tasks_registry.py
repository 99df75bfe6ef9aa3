"""The task table itself: names, aliases, target words, and the packaged demo task."""

from __future__ import annotations

from collections import Counter

import pytest
from test_tasks_files import write_tsv

from dept.tasks import TASKS, candidate_targets, find_tasks, get_task, load_task
from dept.tasks.readers import READERS
from dept.tasks.sources import packaged_demo_dir
from dept.tasks.templates import PREPARE, pad_punctuation, stsb_target

ALL = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "superglue-rte", "boolq", "cb",
       "copa", "wic", "wsc", "multirc", "newsqa", "searchqa", "hotpotqa", "naturalquestions", "squad",
       "winogrande", "yelp_polarity", "scitail", "paws", "demo"]


def test_every_task_of_the_paper_is_in_the_table():
    assert sorted(TASKS) == sorted(ALL)


@pytest.mark.parametrize("alias,name", [("SST-2", "sst2"), ("sts-b", "stsb"), ("STS-B", "stsb"),
                                        ("superglue-cb", "cb"), ("SuperGLUE_RTE", "superglue-rte"),
                                        ("superglue-wsc.fixed", "wsc"), ("nq", "naturalquestions"),
                                        ("yelp-2", "yelp_polarity"), ("PAWS-Wiki", "paws"),
                                        ("MultiRC", "multirc"), (" rte ", "rte")])
def test_aliases(alias, name):
    assert get_task(alias).name == name


@pytest.mark.parametrize("name", ALL)
def test_spec_is_consistent(name):
    spec = TASKS[name]
    assert spec.reader in READERS and (spec.prepare is None or spec.prepare in PREPARE)
    assert {field for _, field in spec.template} <= set(spec.field_names)
    assert "train" in spec.files and spec.main_metric in spec.metrics
    assert (spec.hub is None) == (name == "demo")
    if spec.kind == "classification":
        natural, index = candidate_targets(name), candidate_targets(name, "index")
        assert index == [str(i) for i in range(spec.num_classes)]
        # Both vocabularies are accepted when scoring, so they must never collide.
        assert len(set(natural)) == len(natural) and not set(natural) & set(index)
        assert all(w == w.lower().strip() for w in natural)
    else:
        assert candidate_targets(name) is None and candidate_targets(name, "index") is None


def test_candidate_targets_examples():
    assert candidate_targets("rte") == ["entailment", "not_entailment"]
    assert candidate_targets("SST-2") == ["negative", "positive"]
    assert candidate_targets("cb", "index") == ["0", "1", "2"]
    assert candidate_targets("mnli") == ["entailment", "neutral", "contradiction"]


@pytest.mark.parametrize("score,text", [(0, "0.0"), (5, "5.0"), (3.8, "3.8"), (3.35, "3.4"),
                                        (1.09, "1.0"), (1.11, "1.2"), (4.5, "4.4")])
def test_stsb_target_rounds_to_nearest_fifth(score, text):
    assert stsb_target(score) == text  # 4.5*5 = 22.5 rounds to even (22) as in T5


def test_pad_punctuation_like_t5():
    assert pad_punctuation("U.S. flag, (50) stars!") == "U . S . flag , ( 50 ) stars !"
    assert pad_punctuation("François  naïve_case") == "François naïve_case"


def test_demo_defaults_to_the_packaged_folder():
    counts = find_tasks(packaged_demo_dir())
    assert set(counts) == {"demo"} and counts["demo"]["train"] > 0
    train = load_task("demo", "train")
    val, test = load_task("demo", "validation"), load_task("demo", "test")
    assert len(train) == counts["demo"]["train"]
    assert len(val) + len(test) == counts["demo"]["validation"] and abs(len(val) - len(test)) <= 1
    assert all(e.source.startswith("sentence: ") for e in train)
    assert set(Counter(e.target for e in train)) == {"negative", "positive"}


def test_demo_from_another_folder(tmp_path):
    rows = [["great fun", 1], ["dull and slow", 0], ["loved it", 1], ["a mess", 0]]
    write_tsv(tmp_path / "demo" / "train.tsv", ["sentence", "label"], rows)
    write_tsv(tmp_path / "demo" / "dev.tsv", ["sentence", "label"], rows)
    ex = load_task("demo", "train", tmp_path, target_words="index")
    assert [(e.source, e.target) for e in ex[:2]] == [("sentence: great fun", "1"), ("sentence: dull and slow", "0")]
