"""`dept train`: flags generated from TrainOptions, so help text never drifts from the code.

`--config run.yaml` supplies defaults whose keys are the same names (or aliases); flags
given on the command line win.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from ..training.options import TrainOptions, field_type


def _value_type(annotation):
    """int | None -> int; bool stays bool."""
    kinds = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return kinds[0]


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_options(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainOptions field (plus aliases); defaults are filled in later."""
    parser.add_argument("--config", help="YAML file of options (keys as the flags, without --)")
    hints = typing.get_type_hints(TrainOptions)
    for f in fields(TrainOptions):
        kind = _value_type(hints[f.name])
        names = [f"--{f.name}"] + [f"--{a}" for a in f.metadata.get("aliases", ())]
        default = None if f.default is MISSING else f.default
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        if kind is bool:
            # `--resume` alone means true; `--resume false` is accepted too (YAML parity).
            parser.add_argument(*names, dest=f.name, nargs="?", const=True, type=_parse_bool,
                                default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(*names, dest=f.name, type=kind, choices=f.metadata.get("choices"),
                                default=argparse.SUPPRESS, help=help_text)


def options_from_args(args: argparse.Namespace, defaults: dict | None = None) -> TrainOptions:
    """`defaults` first, then the YAML config (if any), then command-line flags over both."""
    values: dict = dict(defaults or {})
    if getattr(args, "config", None):
        import yaml

        path = Path(args.config)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise SystemExit(f"dept: cannot read config {path}: {err}")
        if not isinstance(loaded, dict):
            raise SystemExit(f"dept: {path}: expected a mapping of option names to values")
        try:
            loaded = {k: _yaml_number(k, v) for k, v in loaded.items()}
            TrainOptions.from_mapping(loaded, source=str(path))  # validates names and types
        except (ValueError, TypeError) as err:
            raise SystemExit(f"dept: {path}: {err}" if str(path) not in str(err) else f"dept: {err}")
        spelling = TrainOptions.field_names()
        values.update({spelling[k]: v for k, v in loaded.items()})
    names = {f.name for f in fields(TrainOptions)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    try:
        return TrainOptions(**values)
    except ValueError as err:
        raise SystemExit(f"dept: {err}")


def _yaml_number(key: str, value):
    """A YAML string for a numeric option is read as its flag would be: PyYAML reads `3e-2`
    (no dot) as the string '3e-2'."""
    name = TrainOptions.field_names().get(key)
    if name is None or not isinstance(value, str):
        return value
    kind, _ = field_type(name)
    if kind not in (int, float):
        return value
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"option {key}: expected {kind.__name__}, got {value!r}") from None


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train DePT (or pt, lora, full) on a task",
                                   description=__doc__.splitlines()[0])
    add_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..adapter_io import AdapterFileError
    from ..tasks import TaskError
    from ..training import train
    from ..training.outputs import OutputDirError

    options = options_from_args(args)
    try:
        results = train(options)
    except (OutputDirError, AdapterFileError, TaskError) as err:  # a used folder, a bad --init_from, bad data
        raise SystemExit(f"dept train: {err}") from None
    if results:
        summary = {k: results[k] for k in ("task", "main_metric", "best_step", "test", "trainable_params",
                                           "train_seconds") if k in results}
        summary["validation_before"] = results.get("before_training")
        summary["validation_best"] = results.get("best_validation")
        print(json.dumps(summary, indent=2))
        print(f"adapter and results in {options.output_dir}", file=sys.stderr)
    return 0
