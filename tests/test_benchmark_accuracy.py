"""The accuracy study's bookkeeping and statistics: which jobs exist and wait for which, how a
failure stops only what needs it, and the report's scores, floor and intervals. Finished runs
are faked as the files `dept search` / `dept train` leave (trials.csv, best.yaml,
results.json, test_predictions.jsonl) on the packaged demo task."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _accuracy_report as report  # noqa: E402
import _stats  # noqa: E402
import accuracy  # noqa: E402
from accuracy import Job, Study  # noqa: E402

from dept.tasks import load_task  # noqa: E402

TEST_N = 40


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setattr(accuracy, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(accuracy, "RECORD", tmp_path / "record")
    s = Study([("m", "demo")], dict(max_steps=10, max_eval_samples=TEST_N, split_seed=42), trials=2, seeds=(1, 2),
              search_eval_samples=8, equal_time=(("m", "demo"),))
    monkeypatch.setitem(accuracy.MODES, "t", s)
    return s


def fake_search(job: Job, best: float = 0.7) -> None:
    job.out.mkdir(parents=True, exist_ok=True)
    (job.out / "trials.csv").write_text("number,state,value,learning_rate,last_step,output_dir\n"
                                        f"0,COMPLETE,{best},0.03,10,\n1,PRUNED,,0.3,5,\n")
    (job.out / "best.yaml").write_text("learning_rate: 0.03\n")
    job.keep(5.0)


def fake_run(job: Job, accuracy_: float, seconds: float = 10.0, steps: int = 10,
             validation: float | None = None) -> None:
    """A finished run whose test predictions are right on a fixed share of the examples, and whose
    best validation score is `validation` (default: the test accuracy)."""
    from dept.training.outputs import TEST_PREDICTIONS, write_predictions

    test = load_task("demo", "test", seed=42)[:TEST_N]
    right = int(round(accuracy_ * TEST_N))
    flip = {"negative": "positive", "positive": "negative"}
    predictions = [e.target if i < right else flip[e.target] for i, e in enumerate(test)]
    job.out.mkdir(parents=True, exist_ok=True)
    write_predictions(job.out / TEST_PREDICTIONS, predictions)
    (job.out / "results.json").write_text(json.dumps({
        "trainable_params": {"lora": 800}.get(job.method, 100), "steps": steps, "train_seconds": seconds,
        "wall_seconds": seconds + 1, "learning_rates": {},
        "best_validation": {"accuracy": accuracy_ if validation is None else validation}}))
    job.keep(seconds + 2)


def test_the_plan_waits_for_searches_and_equal_time_for_both_methods(study):
    jobs = accuracy.plan("t")
    assert [j.kind for j in jobs] == ["search"] * 3 + ["seed"] * 6 + ["equal-time"] * 2
    search = {j.method: j for j in jobs if j.kind == "search"}
    seeds = [j for j in jobs if j.kind == "seed"]
    assert all(j.needs == [search[j.method]] for j in seeds)
    assert not any(j.ready() for j in seeds)
    command = [str(x) for x in search["dept"].command()]
    assert command[:1] == ["search"] and "--n_trials" in command and command[command.index("--max_eval_samples") + 1] == "8"

    fake_search(search["dept"])
    assert search["dept"].done() and all(j.ready() for j in seeds if j.method == "dept")
    seed = next(j for j in seeds if j.method == "dept")
    command = [str(x) for x in seed.command()]
    assert command[command.index("--config") + 1] == str(search["dept"].record / "best.yaml")
    assert search["dept"].record == accuracy.RECORD / "t" / "m" / "demo" / "dept" / "search"
    assert command[command.index("--max_eval_samples") + 1] == str(TEST_N) and "--seed" in command

    for j in seeds:
        fake_run(j, 0.8, seconds=6.0 if j.method == "dept" else 9.0)
    equal = [j for j in jobs if j.kind == "equal-time"]
    assert all(j.ready() for j in equal)
    command = [str(x) for x in equal[0].command()]
    assert command[command.index("--max_steps") + 1] == "15"  # 10 steps x 9 s / 6 s


def test_a_failed_search_skips_only_what_needs_it(study, monkeypatch):
    ran = []

    def run(job: Job, threads: int) -> None:
        if job.kind == "search" and job.method == "pt":
            raise RuntimeError("boom")
        ran.append((job.kind, job.method))
        fake_search(job) if job.kind == "search" else fake_run(job, 0.7)

    monkeypatch.setattr(Job, "run", run)
    failures = accuracy.run_plan(accuracy.plan("t"), workers=2)
    assert any("search m demo pt" in f for f in failures)
    assert sum("skipped" in f for f in failures) == 2 + 2  # PT's seeds, and the equal-time runs that need them
    assert ("seed", "lora") in ran and ("seed", "dept") in ran and ("seed", "pt") not in ran
    assert ran.index(("search", "dept")) < ran.index(("seed", "dept"))


def test_a_stopped_search_resumes_from_its_mirrored_study(study):
    """The scratch folder is gone in a new session: the search's study comes back from the record."""
    import sqlite3

    search = next(j for j in accuracy.plan("t") if j.kind == "search")
    search.out.mkdir(parents=True)
    (search.out / "search.json").write_text("{}\n")
    with sqlite3.connect(search.out / "study.db") as db:
        db.execute("CREATE TABLE trials (number INTEGER, state TEXT)")
        db.execute("INSERT INTO trials VALUES (0, 'COMPLETE')")
    db.close()
    search.save_progress()
    assert not search.done()
    shutil.rmtree(accuracy.RUNS)
    assert search.restore_progress() and not search.restore_progress()  # only into an absent folder
    with sqlite3.connect(search.out / "study.db") as db:
        assert db.execute("SELECT number, state FROM trials").fetchall() == [(0, "COMPLETE")]
    db.close()
    fake_search(search)  # finished: the record keeps only what KEEP lists
    assert search.done() and sorted(p.name for p in search.record.iterdir()) == ["best.yaml", "job.json", "trials.csv"]
    search.save_progress()  # a late mirror of a finished search adds nothing
    assert not (search.record / "study.db").exists()


def test_the_report_scores_intervals_and_floor(study, tmp_path):
    jobs = accuracy.plan("t")
    for j in jobs:
        if j.kind == "search":
            fake_search(j)
    runs = {(j.method, j.kind, j.out.name): j for j in jobs}
    for (method, kind, name), j in runs.items():
        if kind == "seed":
            fake_run(j, {"dept": 0.9, "pt": 0.7, "lora": 0.95}[method] + (0.05 if name == "seed-2" else 0))
    shutil.rmtree(accuracy.RUNS)  # another session: the scratch runs are gone, the record is not
    assert all(j.done() for j in accuracy.plan("t") if j.kind != "equal-time")
    record = report.analyse(study, accuracy.RECORD / "t", None)
    cell = record["cells"][0]
    test = load_task("demo", "test", seed=42)[:TEST_N]
    assert cell["test_examples"] == TEST_N and cell["methods"]["dept"]["seeds"] == 2
    assert cell["methods"]["dept"]["mean"] == pytest.approx(0.925)
    assert cell["methods"]["dept"]["search"]["best_params"] == {"learning_rate": 0.03}
    assert cell["methods"]["dept"]["search"]["wall_seconds"] == 5.0  # from the record, not the scratch folder
    diff = cell["differences"]["dept - pt"]
    assert diff["difference"] == pytest.approx(0.2)
    assert diff["low"] <= diff["difference"] <= diff["high"] and diff["high"] - diff["low"] > 0
    counts = Counter(e.target for e in load_task("demo", "train"))
    majority = next(t for t, n in counts.items() if n == max(counts.values()))  # a tie: the first met
    assert cell["floor"] == pytest.approx(sum(e.target == majority for e in test) / TEST_N)
    assert cell["clears_floor"]  # LoRA at 0.95-1.0 against a floor near 0.5
    means = record["means_over_cleared"]
    assert means["dept - pt"]["difference"] == pytest.approx(0.2) and means["dept - pt"]["tasks"] == 1
    verdicts = {t["target"][:20]: t["verdict"] for t in record["targets"]}
    # +20 points, interval above +2: yes; -5 points on 40 examples and 2 seeds, interval across -1: undecided
    assert verdicts == {"DePT >= PT + 2 point": "yes", "DePT within 1 point ": "undecided"}
    text = report.markdown(record)
    assert "| m | demo | accuracy | 40 |" in text and "+20.0 [" in text
    report.plot(record, tmp_path / "diff.png")
    assert (tmp_path / "diff.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(report.without_replicates(record))  # what accuracy-<mode>.json holds


def test_a_grid_where_nothing_clears_the_floor_states_no_target(study):
    for j in accuracy.plan("t"):
        if j.kind == "search":
            fake_search(j)
    for j in accuracy.plan("t"):
        if j.kind == "seed":  # every method, LoRA included, at about the majority floor
            fake_run(j, 0.5, validation=0.45 if j.out.name.endswith("1") else 0.55)
    record = report.analyse(study, accuracy.RECORD / "t", None)
    assert record["cells"][0]["clears_floor"] is False and record["targets"] == []
    text = report.markdown(record)
    assert "Targets: not measured (no task clears the floor yet)." in text
    assert "| target | measured | verdict |" not in text


def test_which_tasks_enter_the_means_is_decided_on_validation_not_test(study):
    for j in accuracy.plan("t"):
        if j.kind == "search":
            fake_search(j)
    for j in accuracy.plan("t"):
        if j.kind == "seed":  # LoRA high on test, at the floor on validation
            fake_run(j, {"dept": 0.9, "pt": 0.7, "lora": 0.95}[j.method],
                     validation=(0.45 if j.out.name.endswith("1") else 0.55) if j.method == "lora" else None)
    cell = report.analyse(study, accuracy.RECORD / "t", None)["cells"][0]
    assert cell["clears_floor"] is False and cell["lora_validation"]["low"] < cell["validation_floor"]


def test_verdicts_follow_the_interval():
    assert _stats.verdict(2.5, 4.0, 2.0) == "yes" and _stats.verdict(-3.0, 1.9, 2.0) == "no"
    assert _stats.verdict(-3.4, 3.6, -1.0) == "undecided"  # +0.1 [-3.4, +3.6] is not "within 1 point"
    interval = _stats.seed_interval([0.80, 0.82, 0.84])
    assert interval["low"] < 0.82 < interval["high"] and interval["difference"] == pytest.approx(0.82)


def test_a_cell_with_only_a_search_shows_its_measurements_and_dashes_for_the_rest(study):
    search = next(j for j in accuracy.plan("t") if j.kind == "search")
    fake_search(search, best=0.0)  # Matthews 0.0 on every trial is a measurement, not a missing value
    text = report.markdown(report.analyse(study, accuracy.RECORD / "t", None))
    assert "| m | demo | accuracy | 40 | – | – | – | – | – | – | – |" in text  # no floor without seed runs
    assert "| m | demo | dept | – | – | 1/1 | 0.000 | learning_rate 0.03 | 5 | – |" in text
    assert "nan" not in text


def test_paired_bootstrap_narrows_with_pairing_and_resamples_seeds():
    test = load_task("demo", "test")[:TEST_N]
    rng = np.random.default_rng(0)
    flip = {"negative": "positive", "positive": "negative"}
    base = [e.target if rng.random() < 0.7 else flip[e.target] for e in test]
    better = [e.target if i < 10 else p for i, (e, p) in enumerate(zip(test, base))]  # fixes a few of base's errors
    a, b = _stats.Scored("demo", test, [better, better]), _stats.Scored("demo", test, [base])
    d = _stats.paired_difference(a, b)
    assert d["difference"] == pytest.approx(a.scores[0] - b.scores[0]) and d["difference"] > 0
    # Every example A gets right, B gets right or A fixed: a paired difference is never negative.
    assert d["low"] >= 0 and len(d["replicates"]) == _stats.N_RESAMPLES
    single = _stats.interval(b)
    assert single["low"] < b.scores[0] < single["high"]
