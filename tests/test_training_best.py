"""Best-checkpoint selection: the adapter kept, and the one scored on test, are those of the
best validation step, not the last."""

from __future__ import annotations

import pytest
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import adapter_tensors, dept_cli, final_tensors, llama_dir, read_jsonl, results  # noqa: F401
from safetensors.torch import load_file

import dept.training.loop

PREFIX = "dept_adapters.default."
# Validation accuracy by evaluation (steps 0, 2, 4, 6, 8): up, then down, then back to the
# best. A tie does not replace the earlier best.
SCRIPT = [0.5, 0.6, 0.9, 0.7, 0.9]
TEST_SCORE = 0.123


@pytest.fixture(scope="module")
def scripted_run(llama_dir, tmp_path_factory):
    """A run whose evaluations return SCRIPT (then TEST_SCORE for the test split), recording the
    trainable tensors the model held at each evaluation."""
    seen = []

    def scripted_evaluate(model, collator, task, examples, **kw):
        seen.append({n[len(PREFIX):]: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
        score = SCRIPT[len(seen) - 1] if len(seen) <= len(SCRIPT) else TEST_SCORE
        return {"accuracy": score}, ["negative"] * len(examples)

    out = tmp_path_factory.mktemp("scripted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dept.training.loop, "evaluate_with_predictions", scripted_evaluate)
        dept_cli("train", "--model", llama_dir, "--task", "demo", "--output_dir", out, "--max_steps", 8,
                 "--eval_steps", 2, "--save_steps", 4, "--per_device_train_batch_size", 4, "--prompt_init",
                 "random", "--learning_rate", 0.1, "--lora_embedding_lr", 0.05, "--max_eval_samples", 4)
    assert len(seen) == len(SCRIPT) + 1
    return out, seen


def assert_same(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for name in expected:
        assert actual[name].equal(expected[name]), name


def test_best_step_is_the_best_validation(scripted_run):
    out, _ = scripted_run
    r = results(out)
    assert r["best_step"] == 4
    assert r["best_validation"] == {"step": 4, "split": "validation", "accuracy": 0.9}
    assert r["before_training"] == {"accuracy": 0.5}
    validation = [x for x in read_jsonl(out / "metrics.jsonl") if x.get("split") == "validation"]
    assert [(x["step"], x["accuracy"]) for x in validation] == list(zip([0, 2, 4, 6, 8], SCRIPT))


def test_saved_adapter_holds_the_best_steps_tensors(scripted_run):
    out, seen = scripted_run
    best = seen[2]  # the evaluation at step 4
    assert not best["lora_b"].equal(seen[4]["lora_b"])  # training did move on after step 4
    assert_same(adapter_tensors(out), best)
    assert_same({n[len(PREFIX):]: t for n, t in load_file(str(out / "best_trainable.safetensors")).items()}, best)
    # ... while the checkpoint holds the last step's, to resume from
    assert_same({n[len(PREFIX):]: t for n, t in final_tensors(out).items()}, seen[4])


def test_test_split_is_scored_with_the_best_tensors(scripted_run):
    out, seen = scripted_run
    assert_same(seen[-1], seen[2])
    assert results(out)["test"] == {"accuracy": TEST_SCORE}
    test_lines = [x for x in read_jsonl(out / "metrics.jsonl") if x.get("split") == "test"]
    assert test_lines == [{"step": 4, "split": "test", "accuracy": TEST_SCORE}]
