"""The accuracy grid's bookkeeping: which runs exist, which DePT rates the search picks, how
seeds from several blocks are merged. Finished runs are faked as results.json files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import accuracy  # noqa: E402
from accuracy import Grid, Job  # noqa: E402


@pytest.fixture
def grids(tmp_path, monkeypatch):
    monkeypatch.setattr(accuracy, "RUNS", tmp_path)
    blocks = [Grid("m", ("a", "b"), methods=("dept", "pt"), seeds=(1,), rate_search=((0.1, 0.01), (0.2, 0.02))),
              Grid("m", ("a", "b"), methods=("dept", "pt"), seeds=(2,), rates_from=0)]
    monkeypatch.setitem(accuracy.MODES, "t", blocks)
    return blocks


def finish(job: Job, validation: float, test: float = 0.5) -> None:
    """Write what a finished `dept train` run leaves behind."""
    job.out.mkdir(parents=True, exist_ok=True)
    (job.out / "results.json").write_text(json.dumps({
        "main_metric": "accuracy", "best_validation": {"accuracy": validation}, "test": {"accuracy": test},
        "trainable_params": 10, "train_seconds": 1.0, "wall_seconds": 2.0, "best_step": 1, "steps": 1}))


def test_dept_waits_for_the_search_then_uses_its_winner(grids):
    first, more_seeds = grids
    assert {(j.task, j.method) for j in accuracy.grid_jobs("t", first)} == {("a", "pt"), ("b", "pt")}
    assert accuracy.searched_rates("t", more_seeds)[0] is None

    low, high = accuracy.search_jobs("t", first)
    finish(low, validation=0.5)
    finish(high, validation=0.7)
    rates, tried = accuracy.searched_rates("t", first)
    assert rates == {"learning_rate": 0.2, "lora_embedding_lr": 0.02} and len(tried) == 2

    dept = {j.task: j for j in accuracy.grid_jobs("t", first) if j.method == "dept"}
    assert dept["a"].out == high.out  # the search's winning run is reused, not run again
    assert dept["b"].extra == rates and dept["b"].out != high.out
    assert all(j.extra == rates for j in accuracy.grid_jobs("t", more_seeds) if j.method == "dept")


def test_seeds_from_two_blocks_are_merged(grids):
    first, more_seeds = grids
    for job in accuracy.search_jobs("t", first):
        finish(job, validation=0.6 if "0.2" in job.out.name else 0.4)
    for block, test in ((first, 0.6), (more_seeds, 0.8)):
        for job in accuracy.grid_jobs("t", block):
            if job.cached() is None:
                finish(job, validation=0.5, test=test)
    blocks = [accuracy.collect("t", g) for g in grids]
    rows = {(r["task"], r["method"]): r for r in accuracy.summarise(blocks)}
    assert rows[("b", "pt")]["seeds"] == 2 and rows[("b", "pt")]["test_mean"] == pytest.approx(0.7)
    assert rows[("b", "pt")]["test_std"] == pytest.approx(0.1414, abs=1e-3)
    assert rows[("a", "dept")]["test_mean"] == pytest.approx((0.5 + 0.8) / 2)  # the search run's test, then seed 2's
    assert "| 0.2 | 0.02 | 0.600 |" in accuracy.markdown(list(rows.values()), blocks)


def test_a_failed_run_is_reported_and_the_others_still_run(grids, monkeypatch):
    jobs = accuracy.grid_jobs("t", grids[0])

    def run(job: Job, threads: int) -> dict:
        if job.task == "a":
            raise RuntimeError("boom")
        finish(job, validation=0.5)
        return job.cached()

    monkeypatch.setattr(Job, "run", run)
    failures = accuracy.run_jobs(jobs, workers=2)
    assert len(failures) == 1 and "m a pt" in failures[0]
    assert [j.task for j in jobs if j.cached() is not None] == ["b"]


def test_plots_are_written(tmp_path):
    def row(method, variant, score, seconds):
        return {"model": "m", "task": "a", "method": method, "variant": variant, "test_mean": score,
                "test_std": 0.01, "train_seconds": seconds}

    rows = [row("dept", "", 0.8, 60), row("pt", "", 0.78, 100), row("dept", "m=20", 0.75, 30)]
    accuracy.plot(rows, tmp_path / "bars.png", majority={"a": 0.5})
    assert (tmp_path / "bars.png").stat().st_size > 0
    assert accuracy.plot_against_m(rows, tmp_path / "m.png") and (tmp_path / "m.png").stat().st_size > 0
    assert not accuracy.plot_against_m(rows[:2], tmp_path / "none.png")  # no sweep, no plot
    assert not (tmp_path / "none.png").exists()


def test_majority_floor_on_real_data(shared_data, monkeypatch):
    from dept.tasks import load_task

    monkeypatch.setattr(accuracy, "DATA", shared_data / "glue")
    monkeypatch.setitem(accuracy.MODES, "floor", [Grid("m", ("rte", "stsb"), options={"max_eval_samples": 100})])
    floors = accuracy.majority_scores("floor")
    train = load_task("rte", "train", shared_data / "glue")
    test = load_task("rte", "test", shared_data / "glue")[:100]
    majority = max(set(e.label for e in train), key=[e.label for e in train].count)
    assert floors["rte"] == pytest.approx(sum(e.label == majority for e in test) / 100)
    assert floors["stsb"] is None
