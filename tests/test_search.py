"""`dept search` on a tiny encoder: pruning, resuming from the storage, and a best.yaml that trains."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import QUICK, bert_dir, dept_cli, dept_fails  # noqa: F401  (fixture)

from dept.search import default_space, read_space
from dept.training.methods import BASELINE_LR
from dept.training.options import LOWRANK_LR_PER_RMS, PROMPT_LR_PER_RMS, TrainOptions

pytest.importorskip("optuna")

# Evaluations at steps 0, 2, 4, 6 on 48 validation examples. The encoder's head is the part
# whose rate decides the accuracy here: at 3.0 it collapses onto one class (0.417 at step 2),
# at 1e-4 it keeps 0.54, so a 3.0 trial after 1e-4 ones is below their median and pruned.
FAST = [*QUICK, "--eval_steps", 2, "--max_eval_samples", 48, "--no_test"]


def _trials(out) -> list[dict]:
    with open(out / "trials.csv") as handle:
        return list(csv.DictReader(handle))


def test_median_pruner_stops_a_bad_trial_and_best_yaml_trains(bert_dir, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("head_lr: {choices: [0.0001, 3.0]}\n")
    out = tmp_path / "search"
    summary = dept_cli("search", "--model", bert_dir, *FAST, "--output_dir", out, "--n_trials", 4,
                       "--n_startup_trials", 1, "--search_space", space, "--sampler_seed", 2)
    rows = _trials(out)
    assert [r["number"] for r in rows] == ["0", "1", "2", "3"]
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert summary["pruned"] == len(pruned) >= 1 and summary["trials"] == 4
    for row in pruned:  # stopped at an evaluation before the last step, for the rate that collapses
        assert float(row["head_lr"]) == 3.0 and int(row["last_step"]) < 6
        assert not (out / f"trial_{int(row['number']):03d}" / "results.json").exists()
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    best = max(complete, key=lambda r: float(r["value"]))
    assert summary["best_value"] == pytest.approx(float(best["value"]))
    assert json.loads((out / f"trial_{int(best['number']):03d}" / "results.json").read_text())[
        "best_validation"]["accuracy"] == pytest.approx(summary["best_value"])
    assert (out / "plots" / "history.png").read_bytes()[:4] == b"\x89PNG"

    config = yaml.safe_load((out / "best.yaml").read_text())
    assert config["head_lr"] == summary["best_params"]["head_lr"]
    assert config["output_dir"] == str(out.resolve() / "best")
    dept_cli("train", "--config", out / "best.yaml")  # accepted unchanged
    results = json.loads((out / "best" / "results.json").read_text())
    assert results["options"]["head_lr"] == config["head_lr"]
    assert results["options"]["model_name_or_path"] == str(bert_dir)
    assert results["steps"] == 6


def test_a_stopped_search_continues_in_its_storage(bert_dir, tmp_path):
    out = tmp_path / "search"
    first = dept_cli("search", "--model", bert_dir, *FAST, "--output_dir", out, "--n_trials", 2)
    assert first["trials"] == 2 and (out / "study.db").is_file()
    again = dept_cli("search", "--model", bert_dir, *FAST, "--output_dir", out, "--n_trials", 3)
    rows = _trials(out)
    assert again["trials"] == 3 and [r["number"] for r in rows] == ["0", "1", "2"]
    assert (out / "trial_002" / "metrics.jsonl").is_file()
    # The default space: both rates, within x1/10 .. x10 of their scale-aware defaults.
    from dept.pretrained import load_base
    from dept.training.methods import embedding_rms

    rms = embedding_rms(load_base(str(bert_dir))[0])
    for row in rows:
        assert PROMPT_LR_PER_RMS * rms / 10 <= float(row["learning_rate"]) <= PROMPT_LR_PER_RMS * rms * 10
        assert LOWRANK_LR_PER_RMS * rms / 10 <= float(row["lowrank_lr"]) <= LOWRANK_LR_PER_RMS * rms * 10
    assert len({row["learning_rate"] for row in rows}) == 3
    # Trial 0 is the defaults: a search is never worse on validation than not searching.
    assert float(rows[0]["learning_rate"]) == pytest.approx(PROMPT_LR_PER_RMS * rms)
    assert float(rows[0]["lowrank_lr"]) == pytest.approx(LOWRANK_LR_PER_RMS * rms)
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["history.png", "param_importances.png", "params_vs_score.png"]
    done = dept_cli("search", "--model", bert_dir, *FAST, "--output_dir", out, "--n_trials", 3)
    assert done["trials"] == 3  # nothing missing, nothing run
    line = dept_fails("search", "--model", bert_dir, *FAST, "--output_dir", out, "--n_trials", 3,
                      "--max_steps", 8)
    assert "other options" in line and "max_steps" in line


def test_the_defaults_run_again_when_their_trial_was_killed(bert_dir, tmp_path):
    """A defaults trial killed mid-run is marked failed (stale) on resume; the defaults are queued again."""
    import sqlite3

    out = tmp_path / "search"
    args = ["search", "--model", bert_dir, *FAST, "--output_dir", out]
    dept_cli(*args, "--n_trials", 1)
    with sqlite3.connect(out / "study.db") as db:  # what fail_stale_trials leaves of a killed trial 0
        db.execute("UPDATE trials SET state = 'FAIL' WHERE number = 0")
    db.close()
    dept_cli(*args, "--n_trials", 1)
    rows = _trials(out)
    assert [(r["number"], r["state"]) for r in rows] == [("0", "FAIL"), ("1", "COMPLETE")]
    assert rows[1]["learning_rate"] == rows[0]["learning_rate"]
    assert rows[1]["lowrank_lr"] == rows[0]["lowrank_lr"]


def test_search_spaces_scale_with_the_embeddings(tmp_path):
    rms = 0.05
    space = {p.name: p for p in default_space(TrainOptions(), rms)}
    assert math.isclose(space["learning_rate"].low, PROMPT_LR_PER_RMS * rms / 10)
    assert math.isclose(space["learning_rate"].high, PROMPT_LR_PER_RMS * rms * 10)
    assert math.isclose(space["lowrank_lr"].high, LOWRANK_LR_PER_RMS * rms * 10)
    assert space["learning_rate"].log
    assert [p.name for p in default_space(TrainOptions(method="pt"), rms)] == ["learning_rate"]
    # LoRA's body rate does not scale with the embeddings: around its own default, not the prompt's.
    (lora,) = default_space(TrainOptions(method="lora"), rms)
    assert (lora.name, lora.low, lora.high) == ("learning_rate", BASELINE_LR["lora"] / 10, BASELINE_LR["lora"] * 10)

    path = tmp_path / "space.yaml"
    path.write_text("lr: {low_rms: 0.1, high_rms: 1.0}\nr: {low: 0, high: 8}\nprompt_length: {choices: [4, 8]}\n")
    parsed = {p.name: p for p in read_space(path, rms)}
    assert math.isclose(parsed["learning_rate"].low, 0.1 * rms) and parsed["learning_rate"].log
    assert (parsed["rank"].kind, parsed["rank"].low, parsed["rank"].high) == ("int", 0, 8)
    assert parsed["prompt_length"].choices == (4, 8)


@pytest.mark.parametrize("text, message", [
    ("learning_rat: {low: 1, high: 2}\n", "not a dept train option"),
    ("learning_rate: {low: 0.1, high: 0.01}\n", "low < high"),
    ("learning_rate: {low: 0, high: 1, log: true}\n", "low > 0"),
    ("output_dir: {choices: [a, b]}\n", "sets this itself"),
])
def test_bad_search_spaces_are_one_line(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    line = dept_fails("search", "--model", "nowhere", "--search_space", path, "--output_dir", tmp_path / "o")
    assert message in line


def test_a_killed_search_resumes(bert_dir, tmp_path):
    """Killed outright after its first trial: the same command finishes the study, numbering on."""
    import subprocess
    import time

    import optuna
    from helpers_train import dept_command, subprocess_env
    from sqlalchemy.exc import SQLAlchemyError

    out = tmp_path / "search"
    args = ["search", "--model", bert_dir, *FAST, "--output_dir", out, "--n_trials", 3, "--max_steps", 40,
            "--eval_steps", 20]
    proc = subprocess.Popen([*dept_command(), *map(str, args)], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600  # generous: a loaded 2-core CI machine took over 180 s once
        complete = []
        while time.time() < deadline and proc.poll() is None and not complete:
            time.sleep(0.5)
            if (out / "study.db").is_file():
                try:
                    study = optuna.load_study(study_name="dept-search", storage=f"sqlite:///{out / 'study.db'}")
                    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
                except (KeyError, SQLAlchemyError):  # the study or its tables are being created
                    continue
    finally:
        proc.kill()
        proc.wait()
    assert complete, f"no trial finished (search exit status {proc.returncode}, deadline passed: {time.time() >= deadline})"
    assert not (out / "trials.csv").exists()  # it never got to the end
    summary = dept_cli(*args)
    study = optuna.load_study(study_name="dept-search", storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 3 and summary["trials"] == len(states)
    assert sorted(t.number for t in study.trials) == list(range(len(states)))
    assert {t.number for t in study.trials if t.state.name == "COMPLETE"} >= {t.number for t in complete}


def test_a_bad_storage_and_someone_elses_folder_are_one_line(bert_dir, tmp_path):
    line = dept_fails("search", "--model", bert_dir, *FAST, "--output_dir", tmp_path / "s", "--storage", "bogus://x")
    assert line.startswith("dept search: --storage bogus://x: ")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    line = dept_fails("search", "--model", bert_dir, *FAST, "--output_dir", tmp_path / "mine")
    assert "holds no search.json" in line and (tmp_path / "mine" / "notes.txt").read_text() == "keep"
