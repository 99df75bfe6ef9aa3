"""The real GLUE and SuperGLUE files in ../shared/data, read in place.

Row counts and label balance are the official ones (shared/data/README.md); the
formatted first example of each file is written out by hand from the file.
"""

from __future__ import annotations

from collections import Counter

import pytest

from dept.tasks import find_tasks, load_task

GLUE_COUNTS = {
    "cola": {"train": 8551, "validation": 1043},
    "sst2": {"train": 67349, "validation": 872},
    "mrpc": {"train": 3668, "validation": 408},
    "stsb": {"train": 5749, "validation": 1500},
    "qnli": {"validation": 5463},
    "rte": {"train": 2490, "validation": 277},
}
SUPERGLUE_COUNTS = {
    "superglue-rte": {"train": 2490, "validation": 277},
    "boolq": {"validation": 3270},
    "cb": {"train": 250, "validation": 56},
    "copa": {"train": 400, "validation": 100},
    "wsc": {"train": 554, "validation": 104},
}

# (task, suite, official split) -> class counts in natural words
BALANCE = {
    ("sst2", "glue", "train"): {"negative": 29780, "positive": 37569},
    ("sst2", "glue", "validation"): {"negative": 428, "positive": 444},
    ("rte", "glue", "train"): {"entailment": 1249, "not_entailment": 1241},
    ("rte", "glue", "validation"): {"entailment": 146, "not_entailment": 131},
    ("cola", "glue", "validation"): {"unacceptable": 322, "acceptable": 721},
    ("mrpc", "glue", "train"): {"not_equivalent": 1194, "equivalent": 2474},
    ("qnli", "glue", "validation"): {"entailment": 2702, "not_entailment": 2761},
    ("cb", "superglue", "train"): {"entailment": 115, "contradiction": 119, "neutral": 16},
    ("cb", "superglue", "validation"): {"entailment": 23, "contradiction": 28, "neutral": 5},
    ("superglue-rte", "superglue", "validation"): {"entailment": 146, "not_entailment": 131},
    ("boolq", "superglue", "validation"): {"false": 1237, "true": 2033},
    ("copa", "superglue", "validation"): {"choice1": 55, "choice2": 45},
    ("wsc", "superglue", "train"): {"false": 295, "true": 259},
}

# (task, suite, official split) -> (source, target) of the first row of the file
FIRST = {
    ("cola", "glue", "train"): (
        "sentence: Our friends won't buy this analysis, let alone the next one we propose.", "acceptable"),
    ("sst2", "glue", "validation"): (
        "sentence: it 's a charming and often affecting journey .", "positive"),
    ("mrpc", "glue", "validation"): (
        "sentence1: He said the foodservice pie business doesn 't fit the company 's long-term growth "
        "strategy . sentence2: \" The foodservice pie business does not fit our long-term growth strategy .",
        "equivalent"),
    ("stsb", "glue", "train"): (
        "sentence1: A plane is taking off. sentence2: An air plane is taking off.", "5.0"),
    ("qnli", "glue", "validation"): (
        "question: What came into force after the new constitution was herald? sentence: As of that day, "
        "the new constitution heralding the Second Republic came into force.", "entailment"),
    ("rte", "glue", "train"): (
        "sentence1: No Weapons of Mass Destruction Found in Iraq Yet. "
        "sentence2: Weapons of Mass Destruction Found in Iraq.", "not_entailment"),
    ("superglue-rte", "superglue", "train"): (
        "premise: No Weapons of Mass Destruction Found in Iraq Yet. "
        "hypothesis: Weapons of Mass Destruction Found in Iraq.", "not_entailment"),
    ("cb", "superglue", "validation"): (
        "premise: Valence the void-brain, Valence the virtuous valet. Why couldn't the figger choose his "
        "own portion of titanic anatomy to shaft? Did he think he was helping? "
        "hypothesis: Valence was helping", "contradiction"),
    ("copa", "superglue", "validation"): (
        "premise: The man turned on the faucet. choice1: The toilet filled with water. "
        "choice2: Water flowed from the spout. question: effect", "choice2"),
    ("wsc", "superglue", "train"): (
        "text: * Mark * told Pete many lies about himself, which Pete included in his book. "
        "# He # should have been more skeptical.", "false"),
}


def official(shared_data, task, suite, split, **kw):
    return load_task(task, split, shared_data / suite, protocol="official", **kw)


def test_row_counts_match_the_data_readme(shared_data):
    assert find_tasks(shared_data / "glue") == GLUE_COUNTS
    assert find_tasks(shared_data / "superglue") == SUPERGLUE_COUNTS


@pytest.mark.parametrize("key", BALANCE, ids=lambda k: f"{k[0]}-{k[2]}")
def test_label_balance(shared_data, key):
    assert Counter(e.target for e in official(shared_data, *key)) == BALANCE[key]


@pytest.mark.parametrize("key", FIRST, ids=lambda k: f"{k[0]}-{k[2]}")
def test_first_example_formatted(shared_data, key):
    first = official(shared_data, *key)[0]
    assert (first.source, first.target) == FIRST[key]


def test_boolq_first_example_and_index_targets(shared_data):
    first = official(shared_data, "boolq", "superglue", "validation", target_words="index")[0]
    assert first.source.startswith("question: does ethanol take more energy make that produces passage: "
                                   "Ethanol fuel -- All biomass goes through")
    assert (first.target, first.label) == ("0", 0)


def test_stsb_targets_rounded_to_a_fifth(shared_data):
    examples = official(shared_data, "stsb", "glue", "train")
    assert examples[1].label == 3.8 and examples[1].target == "3.8"
    allowed = {f"{i / 5:.1f}" for i in range(26)}
    assert {e.target for e in examples} <= allowed
    assert all(abs(float(e.target) - e.label) <= 0.1 + 1e-9 for e in examples)


PAPER_SIZES = {  # (task, suite) -> (train, validation, test) under the paper's protocol
    ("cola", "glue"): (8551, 521, 522),
    ("sst2", "glue"): (66349, 1000, 872),
    ("mrpc", "glue"): (3668, 204, 204),
    ("stsb", "glue"): (5749, 750, 750),
    ("rte", "glue"): (2490, 138, 139),
    ("superglue-rte", "superglue"): (2490, 138, 139),
    ("cb", "superglue"): (250, 28, 28),
    ("copa", "superglue"): (400, 50, 50),
    ("wsc", "superglue"): (554, 52, 52),
}


@pytest.mark.filterwarnings("ignore:.*WSC span not found")
@pytest.mark.parametrize("key", PAPER_SIZES, ids=lambda k: k[0])
def test_paper_split_sizes_disjoint_and_deterministic(shared_data, key):
    task, suite = key
    splits = {s: load_task(task, s, shared_data / suite, seed=42) for s in ("train", "validation", "test")}
    assert tuple(len(splits[s]) for s in ("train", "validation", "test")) == PAPER_SIZES[key]
    # Rows can repeat within a file (SST-2 phrases, WSC), so compare multisets of rows.
    if task == "sst2":  # holdout: validation comes out of train, test is the official dev set
        parts = Counter(splits["validation"]) + Counter(splits["train"])
        assert parts == Counter(official(shared_data, task, suite, "train"))
        assert splits["test"] == official(shared_data, task, suite, "validation")
    else:  # halve: validation and test together are the official validation set, in some order
        halves = Counter(splits["validation"]) + Counter(splits["test"])
        assert halves == Counter(official(shared_data, task, suite, "validation"))
    assert load_task(task, "validation", shared_data / suite, seed=42) == splits["validation"]
    assert load_task(task, "validation", shared_data / suite, seed=7) != splits["validation"]


def test_qnli_paper_test_needs_only_the_dev_file(shared_data):
    assert len(load_task("qnli", "test", shared_data / "glue")) == 5463
    with pytest.raises(ValueError, match="no train file for task 'qnli'"):
        load_task("qnli", "validation", shared_data / "glue")  # holdout needs train.tsv


def test_k_shot_balanced_and_reproducible(shared_data):
    cb = load_task("cb", "train", shared_data / "superglue", k_shot=16, seed=3)
    counts = Counter(e.label for e in cb)
    assert len(cb) == 16 and sorted(counts.values()) == [5, 5, 6]
    assert cb == load_task("cb", "train", shared_data / "superglue", k_shot=16, seed=3)
    assert cb != load_task("cb", "train", shared_data / "superglue", k_shot=16, seed=4)
    sst = load_task("sst2", "train", shared_data / "glue", k_shot=32, seed=1)
    assert Counter(e.target for e in sst) == {"negative": 16, "positive": 16}
    assert [e.label for e in sst] != sorted(e.label for e in sst)  # shuffled, not class by class


def test_wsc_rows_with_misplaced_spans_warn_with_file_and_line(shared_data):
    with pytest.warns(UserWarning) as caught:
        examples = official(shared_data, "wsc", "superglue", "validation")
    # Line 43 points span2 one word early; line 96 has span2 inside span1.
    assert sorted(str(w.message).split("WSC/")[1][:18] for w in caught) == [
        "val.jsonl, line 43", "val.jsonl, line 96"]
    assert examples[42].source.count("*") == 2 and "#" not in examples[42].source  # span2 unmarked
