"""Metrics on tiny inputs whose values are worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest

from dept.tasks import (
    QA_SCORINGS,
    Example,
    TaskError,
    compute_metrics,
    get_task,
    main_metric,
    qa_scoring_for,
)


def cls(*labels, groups=None):
    groups = groups or [None] * len(labels)
    return [Example("x", str(label), label, group) for label, group in zip(labels, groups)]


def test_accuracy_accepts_either_vocabulary_and_normalises_case():
    examples = cls(0, 1, 1, 0)
    assert compute_metrics("rte", [" Entailment", "not_entailment", "1 ", "0"], examples) == {"accuracy": 1.0}


def test_invalid_prediction_is_wrong_never_dropped():
    examples = cls(0, 1, 1, 0)
    # 2 right out of 4: "maybe" and "" are not labels, and count as misses.
    assert compute_metrics("rte", ["entailment", "maybe", "1", ""], examples) == {"accuracy": 0.5}
    assert compute_metrics("rte", [None, None, None, None], examples) == {"accuracy": 0.0}


def test_f1_and_accuracy_binary_with_invalid_as_opposite_label():
    examples = cls(1, 1, 0, 0, 1)
    # predictions -> 1, 0, 1, 0, and "??" on a gold 1 -> 0 (a miss)
    # TP=1, FP=1, FN=2 -> precision 1/2, recall 1/3, F1 = 2*(1/6)/(5/6) = 0.4; accuracy 2/5
    got = compute_metrics("mrpc", ["equivalent", "not_equivalent", "1", "0", "??"], examples)
    assert got == pytest.approx({"f1": 0.4, "accuracy": 0.4})
    assert list(got) == ["accuracy", "f1"]  # the main metric is reported first
    # "??" on a gold 0 becomes a 1: a false positive. TP=1, FP=1, FN=0 -> F1 = 2/3
    got = compute_metrics("qqp", ["duplicate", "??"], cls(1, 0))
    assert got == pytest.approx({"f1": 2 / 3, "accuracy": 0.5})


def test_matthews_correlation():
    # gold 1,1,0,0 vs pred 1,0,0,0: TP=1 TN=2 FP=0 FN=1 -> (2-0)/sqrt(1*2*3*2) = 2/sqrt(12)
    got = compute_metrics("cola", ["acceptable", "unacceptable", "0", "0"], cls(1, 1, 0, 0))
    assert got == pytest.approx({"matthews_correlation": 2 / math.sqrt(12)})
    # An invalid prediction is the opposite label, so all-invalid is perfectly wrong.
    assert compute_metrics("cola", ["?", "?"], cls(1, 0)) == pytest.approx({"matthews_correlation": -1.0})


def test_cb_macro_f1_with_invalid_as_no_class():
    examples = cls(0, 1, 2, 0)
    # pred 0, 1, invalid, 1. class 0: TP1 FN1 -> F1 2/3; class 1: TP1 FP1 -> 2/3; class 2: FN1 -> 0
    got = compute_metrics("cb", ["entailment", "contradiction", "yes", "1"], examples)
    assert got == pytest.approx({"f1_macro": (2 / 3 + 2 / 3 + 0) / 3, "accuracy": 0.5})


def test_multirc_f1_over_options_and_exact_match_per_question():
    examples = cls(1, 0, 1, 0, 1, groups=["q1", "q1", "q1", "q2", "q2"])
    # q1 all right; q2 has an invalid prediction on a gold 1 (-> 0, a miss).
    # options: TP=2, FP=0, FN=1 -> F1 = 0.8; questions right: 1 of 2
    got = compute_metrics("multirc", ["true", "false", "1", "false", "perhaps"], examples)
    assert got == pytest.approx({"f1": 0.8, "em": 0.5})


def test_stsb_pearson_spearman_and_unparseable_as_worst():
    examples = [Example("x", f"{s:.1f}", s) for s in (1.0, 2.0, 3.0, 4.0)]
    assert compute_metrics("stsb", ["1.0", "2.0", "3.0", "4.0"], examples) == pytest.approx(
        {"pearson": 1.0, "spearman": 1.0})
    # "high" on gold 4.0 is scored 0.0 (the far end of [0, 5]); "9" is out of range, so 5.0 for gold 1.0.
    # pred = [5, 2, 3, 0] against gold [1, 2, 3, 4]
    got = compute_metrics("stsb", ["9", "2", "3", "high"], examples)
    gold, pred = [1, 2, 3, 4], [5, 2, 3, 0]
    mean_g, mean_p = 2.5, 2.5
    cov = sum((g - mean_g) * (p - mean_p) for g, p in zip(gold, pred))
    var_g = sum((g - mean_g) ** 2 for g in gold)
    var_p = sum((p - mean_p) ** 2 for p in pred)
    # Spearman: ranks of pred are [4, 2, 3, 1] against [1, 2, 3, 4] -> 1 - 6*(9+0+0+9)/(4*15) = -0.8
    assert got == pytest.approx({"pearson": cov / math.sqrt(var_g * var_p), "spearman": -0.8})


def test_squad_em_and_f1_best_over_answers():
    examples = [
        Example("q", "Paris", "Paris", answers=("Paris", "the city of Paris")),
        Example("q", "50 stars", "50 stars", answers=("50 stars",)),
        Example("q", "blue", "blue", answers=("blue",)),
    ]
    # 1: "the Paris." normalises to "paris": EM 1, F1 1
    # 2: "50" vs "50 stars": EM 0, precision 1, recall 1/2 -> F1 2/3
    # 3: "" : EM 0, F1 0
    got = compute_metrics("newsqa", ["the Paris.", "50", ""], examples)
    assert got == pytest.approx({"em": 1 / 3, "f1": (1 + 2 / 3 + 0) / 3})


# The reference's TASK_TO_METRICS (ZhengxiangShi/DePT src/metrics.py) in our metric names
# (its f1_multiclass is our f1_macro, its spearmanr our spearman); train.py selects
# checkpoints by the first entry.
REFERENCE_METRICS = {
    "mrpc": ["accuracy", "f1"], "qqp": ["accuracy", "f1"], "cola": ["matthews_correlation"],
    "stsb": ["pearson", "spearman"], "sst2": ["accuracy"], "mnli": ["accuracy"], "qnli": ["accuracy"],
    "rte": ["accuracy"], "boolq": ["accuracy"], "superglue-rte": ["accuracy"], "cb": ["f1_macro", "accuracy"],
    "copa": ["accuracy"], "multirc": ["f1", "em"], "wic": ["accuracy"], "wsc": ["accuracy"],
    "squad": ["em", "f1"], "naturalquestions": ["em", "f1"], "hotpotqa": ["em", "f1"], "searchqa": ["em", "f1"],
    "newsqa": ["em", "f1"], "winogrande": ["accuracy"], "scitail": ["accuracy"], "yelp_polarity": ["accuracy"],
    "paws": ["accuracy"],
}


@pytest.mark.parametrize("task", sorted(REFERENCE_METRICS))
def test_main_metric_and_metric_order_follow_the_reference(task):
    assert list(get_task(task).metrics) == REFERENCE_METRICS[task]
    assert main_metric(task) == REFERENCE_METRICS[task][0]


def test_length_checks():
    with pytest.raises(TaskError, match="2 predictions for 1 examples"):
        compute_metrics("rte", ["0", "1"], cls(0))
    with pytest.raises(TaskError, match="no examples"):
        compute_metrics("rte", [], [])


def qa_example(*answers):
    # As the templates build it: the target (and label) is the first gold answer.
    return Example("q", answers[0], answers[0], answers=answers)


def test_qa_first_answer_scoring_ignores_the_other_gold_answers():
    examples = [qa_example("Paris", "the city of Paris"), qa_example("1850", "in 1850"),
                qa_example("blue", "navy blue")]
    predictions = ["city of Paris", "1850", "red"]
    # all-answers (MRQA): 1 matches its second answer exactly (articles dropped), 2 its first,
    # 3 none -> EM 2/3, F1 (1 + 1 + 0) / 3
    assert compute_metrics("squad", predictions, examples, qa_scoring="all-answers") == pytest.approx(
        {"em": 2 / 3, "f1": 2 / 3})
    # first-answer (reference): 1 is "city of paris" vs "paris": EM 0, precision 1/3, recall 1
    # -> F1 1/2; 2 EM 1, F1 1; 3 EM 0, F1 0 -> EM 1/3, F1 (1/2 + 1 + 0) / 3
    got = compute_metrics("squad", predictions, examples, qa_scoring="first-answer")
    assert got == pytest.approx({"em": 1 / 3, "f1": (1 / 2 + 1) / 3})
    assert list(got) == ["em", "f1"]
    # without a choice, the MRQA standard
    assert compute_metrics("squad", predictions, examples) == pytest.approx({"em": 2 / 3, "f1": 2 / 3})
    with pytest.raises(TaskError, match="qa_scoring must be one of"):
        compute_metrics("squad", predictions, examples, qa_scoring="best")


def test_qa_scoring_follows_the_protocol_and_only_for_qa():
    assert QA_SCORINGS == ("all-answers", "first-answer")
    assert [qa_scoring_for(t, "paper") for t in ("squad", "nq", "newsqa")] == ["first-answer"] * 3
    assert qa_scoring_for("hotpotqa", "official") == "all-answers"
    assert qa_scoring_for("mrpc", "paper") is None and qa_scoring_for("multirc", "official") is None
    with pytest.raises(TaskError, match="protocol must be one of"):
        qa_scoring_for("squad", "mrqa")
