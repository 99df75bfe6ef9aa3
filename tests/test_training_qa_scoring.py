"""QA runs end to end: checkpoints picked by exact match, and the answers scored as the protocol
says (paper: the first gold answer, as the reference; official: all of them, as MRQA), recorded
in results.json and in what `dept eval` prints."""

from __future__ import annotations

import json

import pytest
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import dept_cli, llama_dir, results  # noqa: F401

import dept.evaluation
import dept.training.loop

# Each dev question has two gold answers with no word in common, so a prediction of the second
# one scores 1 against all answers and 0 against the first.
DEV_ANSWERS = [("red", "crimson"), ("1850", "mid century"), ("Paris", "capital city")]
TRAIN_ROWS = 1010  # the paper's protocol holds 1,000 training rows out for validation


def squad_file(path, qas) -> None:
    paragraphs = [{"context": f"{question} is {answers[0]} .",
                   "qas": [{"id": str(i), "question": question,
                            "answers": [{"text": a, "answer_start": 0} for a in answers]}]}
                  for i, (question, answers) in enumerate(qas)]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))


@pytest.fixture(scope="module")
def squad_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "squad"
    folder.mkdir()
    squad_file(folder / "train-v1.1.json", [(f"what is item {i}", (f"thing {i}",)) for i in range(TRAIN_ROWS)])
    squad_file(folder / "dev-v1.1.json", [(f"what is answer {i}", a) for i, a in enumerate(DEV_ANSWERS)])
    return folder


def train_squad(llama_dir, squad_dir, out, protocol: str) -> list:
    """Train 2 steps; returns the qa_scoring each evaluation was asked for."""
    asked = []

    def recording_evaluate(*args, **kw):
        asked.append(kw.get("qa_scoring"))
        return dept.evaluation.evaluate_with_predictions(*args, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dept.training.loop, "evaluate_with_predictions", recording_evaluate)
        dept_cli("train", "--model", llama_dir, "--task", "squad", "--data_dir", squad_dir, "--output_dir", out,
                 "--protocol", protocol, "--max_steps", 2, "--eval_steps", 2, "--save_steps", 2,
                 "--per_device_train_batch_size", 2, "--max_eval_samples", 3, "--max_target_length", 4,
                 "--prompt_init", "random")
    return asked


@pytest.fixture(scope="module")
def paper_run(llama_dir, squad_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    return out, train_squad(llama_dir, squad_dir, out, "paper")


def test_paper_run_scores_first_answer_and_selects_by_exact_match(paper_run):
    out, asked = paper_run
    r = results(out)
    assert r["main_metric"] == "em" and r["qa_scoring"] == "first-answer"
    assert asked == ["first-answer"] * 3  # before training, step 2, test
    assert list(r["test"]) == ["em", "f1"] and list(r["best_validation"])[2:] == ["em", "f1"]


def test_official_run_scores_all_answers(llama_dir, squad_dir, tmp_path):
    asked = train_squad(llama_dir, squad_dir, tmp_path / "official", "official")
    r = results(tmp_path / "official")
    assert r["qa_scoring"] == "all-answers" and asked == ["all-answers"] * 2  # no test split
    assert r["test"] == {}


def test_eval_prints_the_scoring_and_scores_by_it(paper_run, squad_dir, monkeypatch):
    out, _ = paper_run
    # The model "answers" each question with its second gold answer.
    monkeypatch.setattr(dept.evaluation, "predict", lambda model, collator, examples, **kw:
                        [e.answers[1] for e in examples])
    # Under the adapter's protocol (paper) the test split is the dev file: first answers only.
    first = dept_cli("eval", "--adapter", out, "--data_dir", squad_dir, "--split", "test")
    assert first == {"task": "squad", "split": "test", "examples": 3, "decoder": "rank",
                     "qa_scoring": "first-answer", "em": 0.0, "f1": 0.0}
    # Under the official protocol the validation split is the same dev file: every answer counts.
    every = dept_cli("eval", "--adapter", out, "--data_dir", squad_dir, "--split", "validation",
                     "--protocol", "official")
    assert every == {"task": "squad", "split": "validation", "examples": 3, "decoder": "rank",
                     "qa_scoring": "all-answers", "em": 1.0, "f1": 1.0}
