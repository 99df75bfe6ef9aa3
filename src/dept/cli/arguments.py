"""Command-line flags generated from an options dataclass (dept/options.py), the same way
for every command, so `--help`, YAML files and the checks never drift.

Every flag is accepted with underscores and with dashes (`--data_dir`, `--data-dir`), and
so is every alias. `--config run.yaml` (where a command takes it) supplies values whose
keys are the same names; flags given on the command line win. Values are checked by the
dataclass itself, so a bad value reads the same from a flag, a YAML file or code.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from ..errors import OptionError
from ..options import field_type, read_yaml_mapping, spellings


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def flag_names(name: str, aliases=()) -> list[str]:
    """--a_b and --a-b for a name and each alias, without repeats; a one-letter alias is
    also a short flag (-r beside the reference's --r)."""
    names = []
    for spelling in (name, *aliases):
        forms = [f"--{spelling}", f"--{spelling.replace('_', '-')}"] + ([f"-{spelling}"] if len(spelling) == 1 else [])
        for form in forms:  # "--model" has no underscore: both forms are one flag
            if form not in names:
                names.append(form)
    return names


def add_options(parser: argparse.ArgumentParser, cls: type, *, config_file: bool = False,
                defaults: dict | None = None) -> None:
    """One flag per field of `cls` (with its aliases). Values are filled in by options_from_args."""
    if config_file:
        parser.add_argument("--config", help="YAML file of options (keys as the flags, without --)")
    for f in fields(cls):
        kind, _ = field_type(cls, f.name)
        default = (defaults or {}).get(f.name, None if f.default is MISSING else f.default)
        required = bool(f.metadata.get("required"))
        # argparse %-formats help text: a literal "6%" would crash --help.
        help_text = f.metadata.get("help", "").replace("%", "%%")
        if not required and default is not None:
            help_text += f" (default: {default})"
        names = flag_names(f.name, f.metadata.get("aliases", ()))
        if typing.get_origin(kind) is list:  # a repeatable flag: --adapter a=x --adapter b=y
            parser.add_argument(*names, dest=f.name, action="append", type=typing.get_args(kind)[0],
                                default=argparse.SUPPRESS, help=help_text, metavar=f.name.upper())
        elif kind is bool:
            # `--resume` alone means true; `--resume false` is accepted too (YAML parity).
            parser.add_argument(*names, dest=f.name, nargs="?", const=True, type=_parse_bool,
                                default=argparse.SUPPRESS, help=help_text, metavar="BOOL")
        else:
            parser.add_argument(*names, dest=f.name, type=kind, choices=f.metadata.get("choices"),
                                default=argparse.SUPPRESS, help=help_text, required=required,
                                metavar=None if f.metadata.get("choices") else f.name.upper())


def options_from_args(args: argparse.Namespace, cls: type, defaults: dict | None = None):
    """`defaults` first, then the YAML config (if any), then command-line flags over both."""
    values: dict = dict(defaults or {})
    if getattr(args, "config", None):
        values.update(read_config(Path(args.config), cls))
    names = {f.name for f in fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return cls(**values)


def read_config(path: Path, cls: type) -> dict:
    loaded = read_yaml_mapping(path, "--config")
    names = spellings(cls)
    unknown = sorted(k for k in loaded if k not in names)
    if unknown:
        raise OptionError(f"--config {path}: unknown option(s) {unknown}")
    values = {names[k]: _yaml_number(cls, names[k], v, path) for k, v in loaded.items()}
    try:
        cls(**values)  # names, types and bounds, said with the file's name
    except OptionError as err:
        raise OptionError(f"--config {path}: {err}") from None
    return values


def _yaml_number(cls: type, name: str, value, path: Path):
    """A YAML string for a numeric option is read as its flag would be: PyYAML reads `3e-2`
    (no dot) as the string '3e-2'."""
    kind, _ = field_type(cls, name)
    if kind not in (int, float) or not isinstance(value, str):
        return value
    try:
        return kind(value)
    except ValueError:
        raise OptionError(f"--config {path}: option {name}: expected {kind.__name__}, got {value!r}") from None
