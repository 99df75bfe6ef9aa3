"""Resuming: a run killed with SIGKILL and continued with --resume ends exactly where an
uninterrupted run ends; a used output folder is refused unless told to resume or overwrite."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest
import torch
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import (adapter_tensors, dept_cli, dept_command, dept_fails, final_tensors, llama_dir,  # noqa: F401
                           max_abs_diff, read_jsonl, results, subprocess_env)
from safetensors.torch import load_file, save_file

from dept.cli.main import main
from dept.training.checkpoint import find_checkpoint

STEPS = 40


def options(model_dir) -> list:
    return ["train", "--model", model_dir, "--task", "demo", "--max_steps", STEPS, "--eval_steps", 5,
            "--save_steps", 5, "--logging_steps", 3, "--per_device_train_batch_size", 4, "--max_eval_samples", 16,
            "--prompt_init", "random", "--learning_rate", 0.05, "--lora_embedding_lr", 0.01]


@pytest.fixture(scope="module")
def reference(llama_dir, tmp_path_factory):
    """The uninterrupted run, with the same options."""
    out = tmp_path_factory.mktemp("resume") / "reference"
    dept_cli(*options(llama_dir), "--output_dir", out)
    return out


def kill_after_first_checkpoint(cmd: list, out) -> int:
    """Start `cmd`, SIGKILL it once output_dir/checkpoint exists; the step it was killed after."""
    process = subprocess.Popen([str(c) for c in cmd], env=subprocess_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    state = out / "checkpoint" / "trainer_state.json"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if json.loads(state.read_text())["step"] >= 5:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
        assert process.poll() is None, f"the run ended before it could be killed:\n{process.stderr.read()[-2000:]}"
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    return json.loads(find_checkpoint(out).joinpath("trainer_state.json").read_text())["step"]


def without_timings(r: dict) -> dict:
    r = {k: v for k, v in r.items() if k not in ("train_seconds", "wall_seconds", "train_examples_per_second")}
    r["options"] = {k: v for k, v in r["options"].items() if k not in ("output_dir", "resume")}
    return r


def without_speed(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k != "examples_per_second"} for line in lines]


def test_resume_after_sigkill_ends_like_an_uninterrupted_run(llama_dir, reference, tmp_path):
    out = tmp_path / "killed"
    killed_at = kill_after_first_checkpoint([*dept_command(), *options(llama_dir), "--output_dir", out], out)
    assert 5 <= killed_at < STEPS
    assert not (out / "results.json").exists()

    dept_cli(*options(llama_dir), "--output_dir", out, "--resume")
    assert max_abs_diff(final_tensors(out), final_tensors(reference)) == 0
    assert max_abs_diff(adapter_tensors(out), adapter_tensors(reference)) == 0
    assert max_abs_diff(load_file(str(out / "best_trainable.safetensors")),
                        load_file(str(reference / "best_trainable.safetensors"))) == 0
    assert without_timings(results(out)) == without_timings(results(reference))
    # every loss, learning rate and metric line, each once: the lost steps' lines were redone
    assert without_speed(read_jsonl(out / "metrics.jsonl")) == without_speed(read_jsonl(reference / "metrics.jsonl"))


def test_resume_of_a_finished_run_changes_nothing(llama_dir, reference, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(reference, out)
    dept_cli(*options(llama_dir), "--output_dir", out, "--resume")
    assert without_timings(results(out)) == without_timings(results(reference))
    assert read_jsonl(out / "metrics.jsonl") == read_jsonl(reference / "metrics.jsonl")  # no second test line
    assert max_abs_diff(adapter_tensors(out), adapter_tensors(reference)) == 0


def test_resume_without_a_checkpoint_starts_afresh(llama_dir, reference, tmp_path):
    """Killed before its first checkpoint: --resume runs from step 0, without the old lines."""
    out = tmp_path / "early"
    out.mkdir()
    (out / ".dept-run").write_text("{}\n")  # a run folder dept made, killed before its first checkpoint
    (out / "metrics.jsonl").write_text(json.dumps({"step": 0, "split": "validation", "accuracy": 0.0}) + "\n")
    dept_cli(*options(llama_dir), "--output_dir", out, "--resume")
    assert without_speed(read_jsonl(out / "metrics.jsonl")) == without_speed(read_jsonl(reference / "metrics.jsonl"))
    assert max_abs_diff(final_tensors(out), final_tensors(reference)) == 0


def test_a_used_output_dir_is_refused_without_resume(llama_dir, reference, tmp_path, capsys):
    out = tmp_path / "used"
    shutil.copytree(reference, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    message = dept_fails(*options(llama_dir), "--output_dir", out)
    assert "already holds a run" in message and "--resume" in message and "--overwrite_output_dir" in message
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # untouched


def test_overwrite_output_dir_starts_afresh(llama_dir, reference, tmp_path):
    out = tmp_path / "overwritten"
    shutil.copytree(reference, out)
    (out / "notes.txt").write_text("the user's own file")
    (out / "checkpoint" / "mine").mkdir()
    dept_cli(*options(llama_dir), "--output_dir", out, "--overwrite_output_dir", "--max_steps", 3,
             "--eval_steps", 3)
    assert (out / "notes.txt").read_text() == "the user's own file"  # dept removes only what it wrote
    assert results(out)["steps"] == 3
    assert max(line["step"] for line in read_jsonl(out / "metrics.jsonl")) == 3


def test_a_kill_between_the_two_renames_resumes_from_the_previous_checkpoint(reference, tmp_path):
    """save_checkpoint renames checkpoint -> checkpoint.old, then checkpoint.tmp -> checkpoint: a
    kill between the two leaves .old as the newest complete one, and a partial .tmp is never used."""
    out = tmp_path / "between"
    out.mkdir()
    shutil.copytree(reference / "checkpoint", out / "checkpoint.old")
    (out / "checkpoint.tmp").mkdir()
    save_file({"x": torch.zeros(1)}, str(out / "checkpoint.tmp" / "trainable.safetensors"))
    assert find_checkpoint(out) == out / "checkpoint.old"
    (out / "checkpoint.old" / "trainer_state.json").unlink()  # incomplete: not a checkpoint
    assert find_checkpoint(out) is None


def test_the_first_save_after_resuming_from_old_keeps_it_until_replaced(llama_dir, reference, tmp_path):
    """Resumed from checkpoint.old, the next save must not delete it before the new checkpoint is in place."""
    from dept.training import checkpoint as ckpt

    out = tmp_path / "from_old"
    out.mkdir()
    shutil.copytree(reference / "checkpoint", out / "checkpoint.old")
    renames = []
    real_rename = type(out).rename

    def watching_rename(self, target):
        renames.append((self.name, type(out)(target).name, (out / "checkpoint.old").exists()))
        return real_rename(self, target)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(out), "rename", watching_rename)
        model = torch.nn.Linear(2, 2)
        optimizer = torch.optim.AdamW([{"params": model.parameters(), "name": "x"}])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        ckpt.save_checkpoint(out, trainable=dict(model.named_parameters()), optimizer=optimizer, scheduler=scheduler, trainer_state={"step": 1})
    assert renames == [("checkpoint.tmp", "checkpoint", True)]  # .old still there at the rename
    assert not (out / "checkpoint.old").exists() and find_checkpoint(out) == out / "checkpoint"


def test_a_checkpoint_stored_with_older_option_names_is_checked_under_todays(tmp_path):
    """Run folders written before `--lora_embedding_lr` became `--lowrank_lr` resume, and a
    changed value is still refused."""
    from dept.training.checkpoint import CheckpointError
    from dept.training.loop import check_resumable
    from dept.training.options import TrainOptions

    stored = TrainOptions(lowrank_lr=0.01).flat()
    stored["lora_embedding_lr"] = stored.pop("lowrank_lr")  # as the older code wrote options.json
    (tmp_path / "options.json").write_text(json.dumps(stored))
    check_resumable(tmp_path, TrainOptions(lowrank_lr=0.01))
    with pytest.raises(CheckpointError, match=r"lowrank_lr: 0.01 -> 0.02"):
        check_resumable(tmp_path, TrainOptions(lowrank_lr=0.02))
