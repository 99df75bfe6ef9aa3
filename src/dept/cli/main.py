"""Entry point of the `dept` console script.

Each sub-command lives in its own module exposing `add_parser(subparsers)`, which
registers its arguments and sets `func` to the function that runs it. Modules are
imported lazily by name so that `dept budget` does not pay for importing torch.

Every error a user can cause (dept.errors.UserError) is one line on stderr,
`dept <command>: <message>`, and exit status 2; `--debug` (or DEPT_DEBUG=1) shows the
traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ..errors import UserError

# sub-command name -> module under dept.cli
COMMANDS = {
    "budget": "dept.cli.budget_cmd",
    "tasks": "dept.cli.tasks_cmd",
    "train": "dept.cli.train_cmd",
    "eval": "dept.cli.eval_cmd",
    "predict": "dept.cli.predict_cmd",
    "demo": "dept.cli.demo_cmd",
    "serve": "dept.cli.serve_cmd",
    "export": "dept.cli.export_cmd",
    "inspect": "dept.cli.inspect_cmd",
    "search": "dept.cli.search_cmd",
}
EXIT_USER_ERROR = 2
DESCRIPTION = ("Decomposed Prompt Tuning (DePT) for Hugging Face models: train, evaluate and use small "
               "adapters on one frozen model. `dept demo` trains one on the bundled task, offline.")


def common_options() -> argparse.ArgumentParser:
    """Flags every command takes."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error (also DEPT_DEBUG=1)")
    return parent


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """(the top-level parser, each built sub-command's parser by name)."""
    parser = argparse.ArgumentParser(prog="dept", description=DESCRIPTION,
                                     parents=[common_options()])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    parents = [common_options()]
    built = {}
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            # A stub with the command's one-line help, so `dept --help` still lists it.
            sub.add_parser(name, help=f"see `dept {name} --help`")
            continue
        built[name] = importlib.import_module(module_name).add_parser(sub, parents)
    return parser, built


def debugging(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("DEPT_DEBUG", "") not in ("", "0")


def quiet_libraries(debug: bool) -> None:
    """dept's own notes go to stderr as `dept <command>: ...`; the libraries' load reports
    and progress chatter stay out of normal output."""
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()  # the per-load "Loading weights" bar
        except ImportError:  # pragma: no cover - transformers is a dependency
            pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Import only the module of the requested command (fast start-up).
    first = next((a for a in argv if not a.startswith("-")), None)
    parser, built = build_parser(only=first if first in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    if extra:  # said with the sub-command's own usage, not the top-level one
        built.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    debug = debugging(argv)
    quiet_libraries(debug)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"dept {args.command}: %(message)s"))
    logger = logging.getLogger("dept")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        if debug:
            raise
        message = " ".join(str(err).split("\n"))  # one line, whatever the message holds
        print(f"dept {args.command}: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
