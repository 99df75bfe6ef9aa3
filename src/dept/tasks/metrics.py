"""Metrics as in the paper, from target-word predictions, with scikit-learn and scipy.

Predictions are strings: generated text or the chosen candidate. They are compared
after stripping spaces and lower-casing, and either target vocabulary is accepted
(a natural word such as "entailment" or an index such as "1": the two never
collide, which tests check). A prediction that is no valid label is never dropped;
it is scored as wrong:

    binary tasks      it becomes the opposite of the gold label (the reference
                      code's f1_score_with_invalid), so accuracy, F1 and
                      Matthews correlation all count it as a miss
    multi-class       it becomes class -1, which matches no gold label: accuracy
                      counts it wrong and macro-F1 counts it as a false negative
    STS-B             a text that is not a number from 0 to 5 becomes the end of
                      [0, 5] farther from the gold score (0 if gold >= 2.5, else 5):
                      the worst prediction possible for that pair
    extractive QA     any text is a valid answer; a wrong one scores 0

All values are fractions (0..1; correlations -1..1), not percentages. STS-B is
scored against the exact gold score, not its rounded target text.

Extractive QA is scored one of two ways (QA_SCORINGS), chosen by the split protocol:
"all-answers", the MRQA / SQuAD v1.1 standard, takes the best EM and F1 over every gold
answer; "first-answer" compares with the first gold answer only, as the reference code
does (its target is answers[0]), so the paper's QA numbers are first-answer numbers.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from dept.tasks.errors import TaskError
from dept.tasks.records import Example
from dept.tasks.registry import TaskSpec, get_task
from dept.tasks.splits import PROTOCOLS


def _clean(prediction: Any) -> str | None:
    return prediction.strip().lower() if isinstance(prediction, str) else None


def prediction_to_class(spec: TaskSpec, prediction: Any) -> int | None:
    """The class a prediction names, in either target vocabulary; None if invalid."""
    words = {w.lower(): i for i, w in enumerate(spec.natural_words)}
    words.update({str(i): i for i in range(spec.num_classes)})
    return words.get(_clean(prediction) or "")


def prediction_to_score(spec: TaskSpec, prediction: Any) -> float | None:
    """The score a regression prediction states; None if not a number in range."""
    try:
        score = float(_clean(prediction) or "nan")
    except ValueError:
        return None
    lo, hi = spec.score_range
    return score if lo <= score <= hi else None


def _classes(spec: TaskSpec, predictions: Sequence[Any], gold: list[int]) -> list[int]:
    out = []
    for prediction, g in zip(predictions, gold):
        c = prediction_to_class(spec, prediction)
        if c is None:
            c = 1 - g if spec.num_classes == 2 else -1
        out.append(c)
    return out


def _classification(spec: TaskSpec, predictions: Sequence[Any], examples: Sequence[Example]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    gold = [int(e.label) for e in examples]
    pred = _classes(spec, predictions, gold)
    labels = list(range(spec.num_classes))
    scores = {
        "accuracy": lambda: accuracy_score(gold, pred),
        # MultiRC's "f1" is this too, over every answer option pooled: F1a, the reference's
        # multirc_f1_over_all_answers (an invalid prediction counted as the opposite label).
        "f1": lambda: f1_score(gold, pred, pos_label=1, average="binary", zero_division=0),
        "f1_macro": lambda: f1_score(gold, pred, labels=labels, average="macro", zero_division=0),
        "matthews_correlation": lambda: matthews_corrcoef(gold, pred),
        "em": lambda: _group_exact_match(examples, gold, pred),
    }
    return {m: float(scores[m]()) for m in spec.metrics}


def _group_exact_match(examples: Sequence[Example], gold: list[int], pred: list[int]) -> float:
    # MultiRC: a question counts only if every one of its answer options is right.
    right: dict[str, bool] = defaultdict(lambda: True)
    for example, g, p in zip(examples, gold, pred):
        if example.group is None:
            raise TaskError("exact match per question needs examples with a group (MultiRC)")
        right[example.group] &= g == p
    return sum(right.values()) / len(right)


def _regression(spec: TaskSpec, predictions: Sequence[Any], examples: Sequence[Example]) -> dict:
    from scipy.stats import pearsonr, spearmanr

    lo, hi = spec.score_range
    gold = [float(e.label) for e in examples]
    pred = []
    for prediction, g in zip(predictions, gold):
        score = prediction_to_score(spec, prediction)
        pred.append(score if score is not None else (lo if g >= (lo + hi) / 2 else hi))
    scores = {"pearson": lambda: pearsonr(gold, pred)[0], "spearman": lambda: spearmanr(gold, pred)[0]}
    return {m: float(scores[m]()) for m in spec.metrics}


_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's official normalisation: lower case, no punctuation, articles or extra spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


ALL_ANSWERS, FIRST_ANSWER = "all-answers", "first-answer"
QA_SCORINGS = (ALL_ANSWERS, FIRST_ANSWER)
# Which scoring each split protocol uses: the paper's protocol reproduces the reference's
# numbers; the official one keeps the MRQA standard.
QA_SCORING_BY_PROTOCOL = {"paper": FIRST_ANSWER, "official": ALL_ANSWERS}
assert set(QA_SCORING_BY_PROTOCOL) == set(PROTOCOLS)


def qa_scoring_for(name: str, protocol: str) -> str | None:
    """How a run under `protocol` scores the task's answers; None for a task that is not
    extractive QA (its scores do not depend on it)."""
    if get_task(name).kind != "extractive_qa":
        return None
    if protocol not in QA_SCORING_BY_PROTOCOL:
        raise TaskError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
    return QA_SCORING_BY_PROTOCOL[protocol]


def _gold_answers(example: Example, qa_scoring: str) -> tuple[str, ...]:
    answers = example.answers or (str(example.label),)
    return answers[:1] if qa_scoring == FIRST_ANSWER else answers


def _extractive_qa(spec: TaskSpec, predictions: Sequence[Any], examples: Sequence[Example],
                   qa_scoring: str = ALL_ANSWERS) -> dict:
    # SQuAD v1.1's evaluate script: the best score over the gold answers (all of them, or
    # the first only), averaged.
    em = f1 = 0.0
    for prediction, example in zip(predictions, examples):
        text = prediction if isinstance(prediction, str) else ""
        answers = _gold_answers(example, qa_scoring)
        em += max(float(normalize_answer(text) == normalize_answer(a)) for a in answers)
        f1 += max(_token_f1(text, a) for a in answers)
    n = len(examples)
    scores = {"em": lambda: em / n, "f1": lambda: f1 / n,
              "rougeL": lambda: _rouge_l(predictions, examples, qa_scoring)}
    return {m: float(scores[m]()) for m in spec.metrics}


def _rouge_l(predictions: Sequence[Any], examples: Sequence[Example], qa_scoring: str) -> float:
    """Mean ROUGE-L F-measure (rouge-score, with stemming as its authors' default use) against
    the best-matching gold answer."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    total = 0.0
    for prediction, example in zip(predictions, examples):
        text = prediction if isinstance(prediction, str) else ""
        answers = _gold_answers(example, qa_scoring)
        total += max(scorer.score(a, text)["rougeL"].fmeasure for a in answers)
    return total / len(examples)


def compute_metrics(name: str, predictions: Sequence[Any], examples: Sequence[Example], *,
                    qa_scoring: str | None = None) -> dict[str, float]:
    """The task's metrics for predictions (target-word strings) against examples, the main
    metric first. `qa_scoring` (QA_SCORINGS; None: all-answers) applies to answer-scored
    tasks only; a run takes it from its protocol (qa_scoring_for)."""
    spec = get_task(name)
    if len(predictions) != len(examples):
        raise TaskError(f"{len(predictions)} predictions for {len(examples)} examples")
    if not examples:
        raise TaskError("no examples to score")
    if qa_scoring is not None and qa_scoring not in QA_SCORINGS:
        raise TaskError(f"qa_scoring must be one of {list(QA_SCORINGS)}, not {qa_scoring!r}")
    if spec.kind == "classification":
        scores = _classification(spec, predictions, examples)
    elif spec.kind == "regression":
        scores = _regression(spec, predictions, examples)
    else:
        scores = _extractive_qa(spec, predictions, examples, qa_scoring or ALL_ANSWERS)
    return {spec.main_metric: scores[spec.main_metric], **scores}


def main_metric(name: str) -> str:
    """The metric to select checkpoints by and to report first."""
    return get_task(name).main_metric
