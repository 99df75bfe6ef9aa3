"""Every `dept ...` command line and every flag that README.md and docs/*.md show parses as
written (without running the job), and `--help` works for every command."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dept.cli.main import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_LINE = re.compile(r"(?:^|[\s|;(])dept (" + "|".join(COMMANDS) + r")\b")
# Flags in the docs that belong to other programs (torchrun, accelerate, pip, the benchmark
# scripts), and the README's two words for the spellings every flag takes.
OTHER_PROGRAMS = {"--nproc_per_node", "--multi_gpu", "--num_processes", "--cpu", "--no-deps", "--quick",
                  "--full", "--workers", "--report", "--prefix", "--scale", "--decoders", "--threads", "--check",
                  "--under_scores", "--dashes", "--engines", "--head", "--address"}


def code_lines(text: str) -> list[str]:
    """Lines of fenced and 4-space-indented code blocks, continuation lines (`\\`) joined."""
    lines, fenced, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            pending = ""
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        lines.append(line)
    return lines


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of each `dept CMD ...` line in a code block, cut at a comment, pipe,
    redirect or `&`; `[--opt X]` (optional parts in a synopsis) are kept without brackets."""
    found = []
    for path in DOCS:
        for line in code_lines(path.read_text()):
            match = COMMAND_LINE.search(line)
            if not match:
                continue
            rest = line[match.start(1):]
            tokens = []
            for token in shlex.split(rest, comments=True):
                if token in ("|", "&", ">", ";", "&&") or token.startswith(">"):
                    break
                tokens.append(token.strip("[]"))
            found.append((f"{path.name}: {line}", [t for t in tokens if t]))
    return found


def all_flags() -> set[str]:
    _, built = build_parser()
    flags = {"--debug", "--help"}
    for parser in built.values():
        for action in parser._actions:
            flags.update(s for s in action.option_strings if s.startswith("--"))
    return flags


def test_the_docs_show_commands_of_every_kind():
    shown = {argv[0] for _, argv in documented_commands()}
    assert {"train", "eval", "predict", "serve", "export", "inspect", "search", "tasks", "demo"} <= shown


@pytest.mark.parametrize("where, argv", documented_commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_each_documented_command_line_parses(where, argv):
    parser, built = build_parser(only=argv[0])
    args, extra = parser.parse_known_args(argv)
    assert not extra, f"{where}: unrecognized {extra}"
    assert args.command == argv[0] and callable(args.func)
    if argv[0] in ("train", "search") and "--config" not in argv:
        from dept.cli.arguments import options_from_args
        from dept.training.options import TrainOptions

        options = options_from_args(args, TrainOptions)  # the dataclass's own checks, too
        assert isinstance(options, TrainOptions)


def test_every_flag_the_docs_mention_is_a_flag_of_dept():
    known = all_flags()
    unknown = set()
    for path in DOCS:
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", path.read_text()):
            if flag not in known and flag not in OTHER_PROGRAMS:
                unknown.add(f"{path.name}: {flag}")
    assert not unknown, sorted(unknown)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_of_every_command(command, capsys):
    argv = [command, "--help"] if command else ["--help"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dept") and (command in out)
    if command:  # the command's own flags, with their help text
        assert out.count("--") >= 2


def test_the_console_script_answers_help():
    done = subprocess.run([sys.executable, "-m", "dept.cli.main", "train", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--prompt_length" in done.stdout and "--prefix_length" in done.stdout


# Every alias that `dept train` accepted before options took one word per concept.
TRAIN_ALIASES = {"model": "model_name_or_path", "task_name": "task", "prefix_length": "prompt_length",
                 "num_virtual_tokens": "prompt_length", "r": "rank", "lora_alpha": "alpha",
                 "prompt_tuning_init_text": "init_text", "peft_model_id": "init_from",
                 "max_seq_length": "max_length", "k_shot_example": "k_shot_examples", "lr": "learning_rate",
                 "lora_embedding_lr": "lowrank_lr", "batch_size": "per_device_train_batch_size",
                 "train_batch_size": "per_device_train_batch_size", "eval_batch_size": "per_device_eval_batch_size",
                 "resume_from_checkpoint": "resume"}
VALUES = {"model": "m", "task_name": "rte", "prompt_tuning_init_text": "hello", "peft_model_id": "runs/a",
          "lr": "0.5", "lora_embedding_lr": "0.5", "lora_alpha": "4.0", "resume_from_checkpoint": "true"}


@pytest.mark.parametrize("alias", sorted(TRAIN_ALIASES))
@pytest.mark.parametrize("dashes", [False, True])
def test_the_reference_spellings_parse_to_todays_options(alias, dashes, tmp_path):
    from dept.cli.arguments import options_from_args
    from dept.training.options import TrainOptions

    value = VALUES.get(alias, "7")
    flag = "--" + (alias.replace("_", "-") if dashes else alias)
    parser, _ = build_parser(only="train")
    by_alias = options_from_args(parser.parse_args(["train", flag, value]), TrainOptions)
    name = TRAIN_ALIASES[alias]
    by_name = options_from_args(parser.parse_args(["train", f"--{name}", value]), TrainOptions)
    assert by_alias.flat()[name] == by_name.flat()[name] != TrainOptions().flat()[name]
    config = tmp_path / "run.yaml"  # and as a key of a --config file
    config.write_text(f"{alias}: {value}\n")
    from_yaml = options_from_args(parser.parse_args(["train", "--config", str(config)]), TrainOptions)
    assert from_yaml.flat()[name] == by_name.flat()[name]
