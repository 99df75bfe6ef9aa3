"""Entry point of the `dept` console script.

Each sub-command lives in its own module exposing `add_parser(subparsers)`, which
registers its arguments and sets `func` to the function that runs it. Modules are
imported lazily by name so that `dept budget` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command name -> module under dept.cli
COMMANDS = {
    "budget": "dept.cli.budget_cmd",
    "tasks": "dept.cli.tasks_cmd",
    "train": "dept.cli.train_cmd",
    "eval": "dept.cli.eval_cmd",
    "predict": "dept.cli.predict_cmd",
    "demo": "dept.cli.demo_cmd",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dept", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            # Register a stub so `dept --help` still lists every command.
            sub.add_parser(name)
            continue
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Import only the module of the requested command (fast start-up).
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
