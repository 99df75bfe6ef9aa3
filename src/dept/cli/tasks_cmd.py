"""`dept tasks`: list the tasks, show one, or count the rows of the task files under a folder.

    dept tasks                          every task with its suite, kind and metrics
    dept tasks --show TASK              a task's input template, label words and metrics
    dept tasks --data_dir DIR           tasks found under DIR -> {split: rows}
    (--json on any of them prints one JSON object)
"""

from __future__ import annotations

import argparse
import json
import sys

from ..options import Options, opt
from .arguments import add_options, options_from_args


class TasksOptions(Options):
    data_dir: str | None = opt(None)
    """folder of official task files (a suite folder such as glue/, or a task folder): report the tasks found
    there and their row counts"""
    show: str | None = opt(None)
    """show one task: its input template, label words, metrics and split rule; for a task file (.yaml) also its
    row counts and label balance"""
    json: bool = opt(False)
    """print one JSON object"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "tasks", help="list the tasks, show one, or count the rows of the task files under --data_dir",
        description=__doc__.splitlines()[0], parents=parents)
    add_options(parser, TasksOptions)
    parser.set_defaults(func=run)
    return parser


def describe(name: str) -> dict:
    from ..tasks import get_task
    from ..tasks.templates import TARGET_WORDS, class_targets

    spec = get_task(name)
    return {
        "task": spec.name, "suite": spec.suite, "kind": spec.kind,
        "input_template": " ".join(f"{prefix} {{{field}}}" for prefix, field in spec.template),
        "input_fields": [field for _, field in spec.template],
        "label_words": ({words: class_targets(spec, words) for words in TARGET_WORDS}
                        if spec.kind == "classification" else None),
        "metrics": list(spec.metrics), "main_metric": spec.main_metric, "paper_split": spec.paper_split,
    }


def describe_file(path: str) -> dict:
    """A task file as dept understands it, with each split's rows and label balance."""
    from collections import Counter

    from ..tasks.custom import CustomTask

    task = CustomTask.from_yaml(path)
    loaded = task.load()
    spec = loaded.spec
    info = {"task": spec.name, **{k: v for k, v in task.description().items() if k != "name"},
            "files": {k: getattr(task, k) for k in ("train_file", "validation_file", "test_file")},
            "metrics": list(spec.metrics), "rows": {k: len(v) for k, v in loaded.splits.items()}, "notes": loaded.notes}
    if spec.kind == "classification":
        info["label_balance"] = {split: {spec.natural_words[c]: n for c, n in sorted(Counter(
            e.label for e in examples).items())} for split, examples in loaded.splits.items()}
    return info


def run(args: argparse.Namespace) -> int:
    from ..tasks import TASKS, find_tasks

    options = options_from_args(args, TasksOptions)
    if options.show:
        info = describe_file(options.show) if options.show.endswith((".yaml", ".yml")) else describe(options.show)
        if options.json:
            print(json.dumps(info, indent=2))
        else:
            for key, value in info.items():
                print(f"{key:<16}{value}")
        return 0
    if options.data_dir is None:
        table = {
            name: {"suite": s.suite, "kind": s.kind, "metrics": list(s.metrics), "main_metric": s.main_metric}
            for name, s in TASKS.items()
        }
        if options.json:
            print(json.dumps(table, indent=2))
            return 0
        print(f"{'task':<18}{'suite':<11}{'kind':<16}metrics (main first)")
        for name, row in table.items():
            metrics = [row["main_metric"]] + [m for m in row["metrics"] if m != row["main_metric"]]
            print(f"{name:<18}{row['suite']:<11}{row['kind']:<16}{', '.join(metrics)}")
        return 0

    found = find_tasks(options.data_dir)
    if options.json:
        print(json.dumps(found))
    else:
        for name, counts in found.items():
            print(f"{name:<18}" + "  ".join(f"{split}={rows}" for split, rows in counts.items()))
    if not found:
        print(f"dept tasks: no official task files found under {options.data_dir}", file=sys.stderr)
        return 1
    return 0
