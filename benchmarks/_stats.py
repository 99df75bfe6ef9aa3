"""The accuracy study's statistics: per-seed test scores, the majority floor, and paired
bootstrap intervals over test examples and seeds (scipy.stats.bootstrap).

Every run keeps its test predictions (test_predictions.jsonl, in split order), and every
method is scored on the same fixed test split, so a difference between two methods is
paired by example. One bootstrap replicate resamples the test examples (shared by both
methods) and, independently, each method's seeds; the statistic is

    mean over resampled seeds s of M(A_s on the examples) - the same for B

with M the task's main metric computed by dept's own compute_metrics (a resampled set of
examples is scored like a test split, so F1 and Matthews are recomputed, not averaged).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass
class Scored:
    """One method's finished seeds on one task, on the same test examples."""

    task: str
    examples: list
    predictions: list[list[str]]
    """Per seed, one prediction per test example."""

    def score(self, seed: int, rows: np.ndarray | None = None) -> float:
        from dept.tasks import compute_metrics, main_metric

        preds, examples = self.predictions[seed], self.examples
        if rows is not None:
            preds, examples = [preds[i] for i in rows], [examples[i] for i in rows]
        return compute_metrics(self.task, preds, examples)[main_metric(self.task)]

    @property
    def scores(self) -> list[float]:
        return [self.score(s) for s in range(len(self.predictions))]


def majority(task: str, train: list, examples: list) -> Scored:
    """Every test example given the training split's most frequent target (a tie: the one met
    first in the split)."""
    target = Counter(e.target for e in train).most_common(1)[0][0]
    return Scored(task, examples, [[target] * len(examples)])


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _bootstrap(scored: list[Scored], value, seed: int):
    """scipy's percentile bootstrap of value([mean score of each Scored]) over the test examples
    (one draw shared by all, so differences are paired) and, independently, each one's seeds
    (a single seed is kept as it is: scipy resamples only samples of two or more)."""
    from scipy.stats import bootstrap

    n = len(scored[0].examples)
    assert all(len(s.examples) == n for s in scored), "every method is scored on the same test split"
    resampled = [i for i, s in enumerate(scored) if len(s.predictions) > 1]

    def statistic(rows, *seed_draws):
        draws = dict(zip(resampled, seed_draws))
        means = []
        for i, s in enumerate(scored):
            seeds = [int(x) for x in draws.get(i, range(len(s.predictions)))]
            by_seed = {x: s.score(x, rows) for x in set(seeds)}  # each distinct seed scored once
            means.append(np.mean([by_seed[x] for x in seeds]))
        return value(means)

    data = (np.arange(n), *[np.arange(len(scored[i].predictions)) for i in resampled])
    return bootstrap(data, statistic, n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE, method="percentile",
                     vectorized=False, paired=False, rng=np.random.default_rng(seed))


def paired_difference(a: Scored, b: Scored, seed: int = 0) -> dict:
    """A − B on the main metric: the point estimate (difference of the means over seeds) and
    its interval. Returns the replicates too, so that a mean over tasks can be bootstrapped
    replicate by replicate."""
    result = _bootstrap([a, b], lambda means: means[0] - means[1], seed)
    low, high = result.confidence_interval
    return {"difference": statistics.mean(a.scores) - statistics.mean(b.scores), "low": float(low),
            "high": float(high), "replicates": result.bootstrap_distribution.tolist()}


def interval(a: Scored, seed: int = 0) -> dict:
    """A's mean score over seeds with its interval."""
    result = _bootstrap([a], lambda means: means[0], seed)
    low, high = result.confidence_interval
    return {"difference": statistics.mean(a.scores), "low": float(low), "high": float(high)}


def seed_interval(values: list[float]) -> dict:
    """The mean of per-seed scores with its t interval over seeds (for scores whose predictions
    were not kept, as the best validation score of each run)."""
    from scipy import stats

    mean, sd = mean_sd(values)
    half = stats.t.ppf(1 - (1 - CONFIDENCE) / 2, len(values) - 1) * sd / len(values) ** 0.5 if len(values) > 1 \
        else float("inf")
    return {"difference": mean, "low": mean - half, "high": mean + half}


def verdict(low: float, high: float, threshold: float) -> str:
    """'yes' when the interval lies at or above the threshold, 'no' when it lies below it,
    'undecided' when it straddles it: a point estimate alone decides nothing."""
    return "yes" if low >= threshold else "no" if high < threshold else "undecided"


def mean_of_differences(differences: list[dict]) -> dict | None:
    """The mean over tasks of per-task differences, with the interval of the replicate-wise
    mean (tasks bootstrapped independently; each has N_RESAMPLES replicates)."""
    if not differences:
        return None
    replicates = np.mean([d["replicates"] for d in differences], axis=0)
    alpha = (1 - CONFIDENCE) / 2
    return {"difference": statistics.mean(d["difference"] for d in differences),
            "low": float(np.quantile(replicates, alpha)), "high": float(np.quantile(replicates, 1 - alpha)),
            "tasks": len(differences)}
