"""`dept tasks`: list the tasks, or count the rows of the task files under a folder.

    dept tasks                          every task with its suite, kind and metrics
    dept tasks --json                   the same as one JSON object
    dept tasks --data-dir DIR [--json]  tasks found under DIR -> {split: rows}
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "tasks",
        help="list the tasks, or count the rows of the official task files under --data-dir",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--data-dir", help="folder of official task files (a suite folder such as glue/, "
                        "or a task folder); report the tasks found there and their row counts")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from dept.tasks import TASKS, TaskDataError, find_tasks

    if args.data_dir is None:
        table = {
            name: {"suite": s.suite, "kind": s.kind, "metrics": list(s.metrics), "main_metric": s.main_metric}
            for name, s in TASKS.items()
        }
        if args.json:
            print(json.dumps(table, indent=2))
            return 0
        print(f"{'task':<18}{'suite':<11}{'kind':<16}metrics (main first)")
        for name, row in table.items():
            metrics = [row["main_metric"]] + [m for m in row["metrics"] if m != row["main_metric"]]
            print(f"{name:<18}{row['suite']:<11}{row['kind']:<16}{', '.join(metrics)}")
        return 0

    try:
        found = find_tasks(args.data_dir)
    except TaskDataError as err:
        print(f"dept tasks: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(found))
    else:
        for name, counts in found.items():
            print(f"{name:<18}" + "  ".join(f"{split}={rows}" for split, rows in counts.items()))
    if not found:
        print(f"dept tasks: no official task files found under {args.data_dir}", file=sys.stderr)
        return 1
    return 0
