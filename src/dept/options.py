"""Options as dataclasses: one field per option, its help, aliases, choices and bounds
in the field's metadata, checked in one place.

The command line (cli/arguments.py) generates its flags from the same fields, and YAML
files bind to them, so help text, defaults and checks never drift apart.
"""

from __future__ import annotations

import math
import typing
from dataclasses import field, fields
from pathlib import Path

from .errors import OptionError


def opt(default, help: str, *aliases: str, choices=None, minimum: float | None = None,
        positive: bool = False, required: bool = False):
    """A dataclass field that is an option. `minimum`: the smallest value allowed;
    `positive`: must be > 0 (rates); `required`: the command line demands it."""
    return field(default=default, metadata={"help": help, "aliases": aliases, "choices": choices,
                                            "minimum": minimum, "positive": positive, "required": required})


def field_type(cls: type, name: str) -> tuple[type, bool]:
    """(value type, whether None is allowed) of a field: `int | None` -> (int, True)."""
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) is list:
        return hint, False
    args = typing.get_args(hint)
    kinds = [a for a in args if a is not type(None)] or [hint]
    return kinds[0], type(None) in args


def spellings(cls: type) -> dict[str, str]:
    """Every accepted spelling (name or alias) -> field name."""
    names = {}
    for f in fields(cls):
        names[f.name] = f.name
        for alias in f.metadata.get("aliases", ()):
            names[alias] = f.name
    return names


def check_options(options) -> None:
    """Refuse any value no run can use, naming the option. YAML files and code do not pass
    through argparse's type and choice checks (a misspelt `method: loar` would otherwise fall
    through to full fine-tuning), and argparse checks no bounds."""
    for f in fields(options):
        value = getattr(options, f.name)
        kind, optional = field_type(type(options), f.name)
        if value is None and optional:
            continue
        if typing.get_origin(kind) is list:
            ok = isinstance(value, list) and all(isinstance(v, typing.get_args(kind)[0]) for v in value)
            kind = list
        elif kind is bool:
            ok = isinstance(value, bool)
        elif kind in (int, float):
            ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
        else:
            ok = isinstance(value, kind)
        if not ok:
            raise OptionError(f"option {f.name}: expected {kind.__name__}{' or null' if optional else ''}, "
                              f"got {value!r}")
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise OptionError(f"option {f.name}: must be one of {list(meta['choices'])}, got {value!r}")
        if meta.get("minimum") is not None and value < meta["minimum"]:
            raise OptionError(f"option {f.name}: must be at least {meta['minimum']}, got {value}")
        if meta.get("positive") and not value > 0:
            raise OptionError(f"option {f.name}: must be greater than 0, got {value}")


def read_yaml_mapping(path, flag: str, error: type[Exception] = OptionError, values: str = "values") -> dict:
    """The one place a YAML file of options is read (`--config`, `--search_space`): a mapping,
    or a one-line error naming the flag and the file."""
    import yaml  # only when a file is read: `dept budget` starts fast

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as err:
        raise error(f"{flag} {path}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise error(f"{flag} {path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise error(f"{flag} {path}: expected a mapping of option names to {values}")
    return loaded
