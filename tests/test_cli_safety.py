"""The command line never loses a user's files, never shows a traceback for bad input, and
means the same thing by the same flag everywhere (each case of issue 10, through the real CLI)."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys

import pytest
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import (QUICK, dept_cli, dept_command, dept_fails, llama_dir, results, run,  # noqa: F401
                           trained_run, write_rte)

from dept.cli.main import COMMANDS, build_parser, main

TRAIN = ["train", *QUICK]


def tree(path) -> dict[str, str]:
    """Every file under `path` with its content: what a test checks stayed untouched."""
    return {str(p.relative_to(path)): p.read_bytes().hex() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rank_run(llama_dir, tmp_path_factory):
    return trained_run(llama_dir, tmp_path_factory)


# ----- --help and flags ------------------------------------------------------------------
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_and_every_flag_has_help_text(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    _, built = build_parser(only=command)
    for action in built[command]._actions:
        assert action.help, f"dept {command} {action.option_strings} has no help text"
        assert len(set(action.option_strings)) == len(action.option_strings), action.option_strings  # no repeats
    assert "usage: dept " + command in capsys.readouterr().out


def test_help_prints_the_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "6% of max_steps" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["train", "eval", "predict", "budget", "tasks", "demo"])
def test_both_spellings_of_a_flag(command):
    _, built = build_parser(only=command)
    for action in built[command]._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        for flag in longs:
            if "_" in flag:
                assert flag.replace("_", "-") in longs, f"dept {command}: {flag} has no dashed spelling"


def test_the_same_concept_has_the_same_flag_in_every_command():
    flags = {c: {o for a in build_parser(only=c)[1][c]._actions for o in a.option_strings} for c in COMMANDS}
    for command in ("train", "eval", "predict"):
        assert {"--model", "--model_name_or_path", "--per_device_eval_batch_size"} <= flags[command]
    for command in ("train", "eval", "tasks"):
        assert {"--data_dir", "--data-dir"} <= flags[command]
    assert "--max_eval_samples" in flags["eval"] and "--max_samples" not in flags["eval"]
    assert "--batch_size" not in flags["eval"] | flags["predict"]  # it means the training batch
    assert {"--vanilla_length", "--vanilla-length", "--max_length", "--hidden_size", "--prompt_length",
            "--rank"} <= flags["budget"]


def test_a_wrong_argument_prints_the_subcommands_usage(capsys):
    with pytest.raises(SystemExit) as done:
        main(["eval", "--adapter", "x", "--bogus"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: dept eval") and "unrecognized arguments: --bogus" in err


# ----- numbers ---------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--learning_rate", "-0.1"], "option learning_rate: must be greater than 0"),
    (["--lora_embedding_lr", "0"], "option lowrank_lr: must be greater than 0"),
    (["--warmup_steps", "-1"], "option warmup_steps: must be at least 0"),
    (["--max_train_samples", "0"], "option max_train_samples: must be at least 1"),
    (["--max_train_samples", "-1"], "option max_train_samples: must be at least 1"),
    (["--max_eval_samples", "0"], "option max_eval_samples: must be at least 1"),
    (["--batch_size", "0"], "option per_device_train_batch_size: must be at least 1"),
    (["--per_device_eval_batch_size", "0"], "option per_device_eval_batch_size: must be at least 1"),
])
def test_train_numbers_are_checked(args, message, tmp_path):
    assert message in dept_fails(*TRAIN, *args, "--output_dir", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_predict_and_eval_numbers_are_checked(rank_run):
    assert "option max_new_tokens: must be at least 1" in dept_fails("predict", "--adapter", rank_run,
                                                                     "--max_new_tokens", 0)
    assert "option max_eval_samples: must be at least 1" in dept_fails("eval", "--adapter", rank_run,
                                                                       "--max_eval_samples", 0)
    assert "option per_device_eval_batch_size" in dept_fails("eval", "--adapter", rank_run, "--eval_batch_size", 0)


def test_giving_both_m_and_r_says_where_the_budget_lands(llama_dir, tmp_path, capsys):
    dept_cli(*TRAIN, "--model", llama_dir, "--output_dir", tmp_path / "o", "--prompt_length", 4, "--rank", 3,
             "--vanilla_length", 10, "--max_length", 64, "--max_steps", 1, "--eval_at_start", "false")
    # d = 32: 4·32 + (64 + 32)·3 = 416 against l·d = 320
    assert "prompt_length 4 and rank 3 give 416 trainable parameters, over the budget of vanilla_length 10 (320)" \
        in capsys.readouterr().err
    assert results(tmp_path / "o")["trainable_params"] == 416


# ----- the user's files ------------------------------------------------------------------
def test_overwrite_refuses_a_folder_dept_did_not_make(llama_dir, tmp_path):
    folder = tmp_path / "some_folder"
    (folder / "mydata").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "mydata" / "rows.csv").write_text("a,b\n")
    before = tree(folder)
    message = dept_fails(*TRAIN, "--model", llama_dir, "--overwrite_output_dir", "--output_dir", folder)
    assert "holds files dept did not write" in message and "nothing was changed" in message
    assert tree(folder) == before


def test_demo_never_wipes_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert "holds files dept did not write" in dept_fails("demo", "--output_dir", ".")
    assert tree(tmp_path) == {"notes.txt": b"mine".hex()}


def test_demo_does_not_overwrite_another_finished_run(rank_run, tmp_path):
    other = tmp_path / "runs" / "sst2"
    shutil.copytree(rank_run, other)
    before = tree(other)
    assert "already holds a run" in dept_fails("demo", "--output_dir", other)
    assert tree(other) == before


def test_a_failed_run_leaves_nothing_that_blocks_the_next(llama_dir, tmp_path):
    out = tmp_path / "o"
    # fails after the folder was made: the task's data is not there
    assert "data_dir" in dept_fails(*TRAIN, "--model", llama_dir, "--task", "rte", "--output_dir", out)
    assert not out.exists()
    # a run killed before its first checkpoint leaves a marked, unfinished folder: the next attempt takes it
    out.mkdir()
    (out / ".dept-run").write_text("{}\n")
    (out / "metrics.jsonl").write_text('{"step": 0, "split": "validation", "accuracy": 0.5}\n')
    dept_cli(*TRAIN, "--model", llama_dir, "--output_dir", out, "--max_steps", 2, "--eval_steps", 2)
    assert results(out)["steps"] == 2


# ----- resume ----------------------------------------------------------------------------
def test_resume_refuses_options_that_change_the_result(llama_dir, tmp_path, capsys):
    out = tmp_path / "o"
    dept_cli(*TRAIN, "--model", llama_dir, "--output_dir", out, "--max_steps", 3, "--save_steps", 3)
    before = tree(out)
    message = dept_fails(*TRAIN, "--model", llama_dir, "--output_dir", out, "--max_steps", 4, "--resume",
                         "--learning_rate", 0.5, "--batch_size", 2)
    for change in ("max_steps: 3 -> 4", "learning_rate: None -> 0.5", "per_device_train_batch_size: 4 -> 2"):
        assert change in message
    assert tree(out) == before
    assert "task: 'demo' -> 'rte'" in dept_fails(*TRAIN, "--model", llama_dir, "--output_dir", out,
                                                 "--max_steps", 3, "--save_steps", 3, "--resume", "--task", "rte")
    assert "prompt_length: None -> 7" in dept_fails(*TRAIN, "--model", llama_dir, "--output_dir", out, "--max_steps",
                                                    3, "--save_steps", 3, "--resume", "--prompt_length", 7)
    capsys.readouterr()
    # options that cannot change the result may differ; it says where it resumes
    dept_cli(*TRAIN, "--model", llama_dir, "--output_dir", out, "--max_steps", 3, "--save_steps", 1, "--resume",
             "--logging_steps", 1, "--per_device_eval_batch_size", 3)
    assert "resuming from step 3 of 3" in capsys.readouterr().err


def test_a_corrupt_checkpoint_is_named(llama_dir, tmp_path):
    out = tmp_path / "o"
    dept_cli(*TRAIN, "--model", llama_dir, "--output_dir", out, "--max_steps", 3, "--save_steps", 3)
    (out / "checkpoint" / "optimizer.safetensors").write_bytes(b"not a tensor file")
    message = dept_fails(*TRAIN, "--model", llama_dir, "--output_dir", out, "--max_steps", 3, "--save_steps", 3,
                         "--resume")
    assert "checkpoint/optimizer.safetensors: corrupt or unreadable checkpoint file" in message


# ----- one line, no traceback --------------------------------------------------------------
def test_user_errors_are_one_line(llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    o = ["--output_dir", tmp_path / "o"]
    assert "did you mean the packaged model 'smollm2-135m'" in dept_fails("train", "--model", "smolm2-135m", *o)
    assert "no such model folder" in dept_fails("train", "--model", tmp_path / "nowhere", *o)
    assert "unknown task 'sst3'" in dept_fails("train", "--model", llama_dir, "--task", "sst3", *o)
    assert "rank 500" in dept_fails("train", "--model", llama_dir, "--task", "demo", "--rank", 500, *o)
    assert "give exactly one of --hidden_size or --model" in dept_fails("budget", "-l", 10, "-s", 64, "-r", 2)
    write_rte(tmp_path / "glue", rows=6)
    (tmp_path / "glue" / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n")
    assert "training split has no examples" in dept_fails(*TRAIN, "--model", llama_dir, "--task", "rte",
                                                          "--data_dir", tmp_path / "glue", *o)
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback(tmp_path):
    done = run([*dept_command(), "train", "--model", tmp_path / "nowhere", "--output_dir", tmp_path / "o",
                "--debug"])
    assert done.returncode != 0 and "Traceback" in done.stderr and "ModelNotFound" in done.stderr
    plain = run([*dept_command(), "train", "--model", tmp_path / "nowhere", "--output_dir", tmp_path / "o"])
    assert plain.returncode == 2 and plain.stderr.strip().count("\n") == 0 and "Traceback" not in plain.stderr


# ----- adapter configs ---------------------------------------------------------------------
@pytest.mark.parametrize("field", ["alpha", "scaling", "on_overflow", "rank", "prompt_length"])
def test_an_adapter_config_missing_a_field_is_refused(rank_run, tmp_path, field):
    adapter = tmp_path / "a"
    shutil.copytree(rank_run, adapter)
    record = json.loads((adapter / "adapter_config.json").read_text())
    del record[field]
    (adapter / "adapter_config.json").write_text(json.dumps(record))
    (tmp_path / "in.jsonl").write_text('{"sentence": "fine"}\n')
    message = dept_fails("predict", "--adapter", adapter, "--input", tmp_path / "in.jsonl")
    assert f"missing required field(s) ['{field}']" in message


# ----- predict ------------------------------------------------------------------------------
def predict_lines(rank_run, text: str, *args, monkeypatch) -> list[dict]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    printed = io.StringIO()
    monkeypatch.setattr(sys, "stdout", printed)
    assert main(["predict", "--adapter", str(rank_run), *map(str, args)]) == 0
    return [json.loads(line) for line in printed.getvalue().splitlines()]


def test_predict_formats_raw_fields_with_the_task_template(rank_run, monkeypatch):
    raw = predict_lines(rank_run, '{"sentence": "a gorgeous, witty film"}\n', monkeypatch=monkeypatch)
    formatted = predict_lines(rank_run, '{"source": "sentence: a gorgeous, witty film"}\n', monkeypatch=monkeypatch)
    assert raw == formatted and raw[0]["source"] == "sentence: a gorgeous, witty film"


def test_predict_overflow_names_the_input_line_or_says_it_truncated(rank_run, monkeypatch, capsys):
    long = " ".join(["word"] * 400)
    text = "".join(f'{{"sentence": "short {i}"}}\n' for i in range(39)) + json.dumps({"sentence": long}) + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["predict", "--adapter", str(rank_run), "--on_overflow", "error"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and re.fullmatch(r"dept predict: <stdin>, line 40: the input has \d+ tokens, more than the "
                                      r"adapter's max_length 256 .*\n", err)
    lines = predict_lines(rank_run, text, monkeypatch=monkeypatch)
    assert len(lines) == 40
    assert "truncated 1 of 40 inputs to the adapter's max_length of 256 tokens (lines 40)" in capsys.readouterr().err
