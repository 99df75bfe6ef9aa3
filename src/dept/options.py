"""Options as pydantic models: one field per option, its help in the docstring under it, its
other spellings, choices and bounds in the field, validated by pydantic in one place.

A command's options are one `Options` class; `dept train`'s are nested groups (an `Options`
whose fields are `Options`: adapter, data, optimiser, evaluation, run). Every option keeps one
flat name across the groups, so the command line (`--rank`), YAML files (`rank: 4`) and code
(`TrainOptions(rank=4)`) say it the same way; nested mappings (`adapter: {rank: 4}`) are
accepted too. The command line (cli/arguments.py) is generated from the same fields.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from .errors import OptionError

# `--json` (budget, tasks, inspect) is an option named json: it shadows pydantic's deprecated
# v1 method BaseModel.json on purpose.
warnings.filterwarnings("ignore", message='Field name "json" in ".*Options" shadows an attribute')


def opt(default: Any = ..., *aliases: str, choices=None, minimum: float | None = None, positive: bool = False):
    """An option field (its help is the docstring under it). `default` ... : required;
    `aliases`: other accepted spellings; `minimum`: smallest value allowed; `positive`: > 0."""
    extra = {"aliases": list(aliases), "choices": list(choices) if choices else None}
    return Field(default, ge=minimum, gt=0 if positive else None, json_schema_extra=extra)


class Options(BaseModel):
    """A set of options. Fields that are themselves `Options` are groups; every leaf option has
    a name unique across the groups, so flat values are placed into their groups."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False,
                              validate_default=False)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise OptionError(describe(err)) from None

    # ----- the flat view: one name per option, whatever group holds it ------------------
    @classmethod
    def groups(cls) -> dict[str, type[Options]]:
        return {name: f.annotation for name, f in cls.model_fields.items() if _is_group(f)}

    @classmethod
    def leaves(cls) -> Iterator[tuple[str | None, str, FieldInfo]]:
        """(group or None, name, field) of every option."""
        for name, f in cls.model_fields.items():
            if _is_group(f):
                yield from ((name, leaf, lf) for _, leaf, lf in f.annotation.leaves())
            else:
                yield None, name, f

    @classmethod
    def spellings(cls) -> dict[str, str]:
        """Every accepted spelling (name or alias) -> option name."""
        names = {}
        for _, name, f in cls.leaves():
            names[name] = name
            names.update({alias: name for alias in meta(f)["aliases"]})
        return names

    def flat(self) -> dict[str, Any]:
        """name -> value of every option (results.json, checkpoints and the resume check keep this)."""
        return {name: getattr(getattr(self, group) if group else self, name) for group, name, _ in self.leaves()}

    def replaced(self, **changes: Any):
        """A copy with some options changed (flat names), validated again."""
        return type(self)(**{**self.flat(), **changes})

    @model_validator(mode="before")
    @classmethod
    def _place(cls, values: Any) -> Any:
        """Other spellings under their names, and flat names into their groups."""
        if not isinstance(values, dict):
            return values
        spelled, placed = cls.spellings(), {}
        where = {name: group for group, name, _ in cls.leaves()}
        groups = cls.groups()
        for key, value in values.items():
            if key in groups and isinstance(value, (dict, BaseModel)):
                inner = value.model_dump() if isinstance(value, BaseModel) else value
                placed.setdefault(key, {}).update(inner)
                continue
            name = spelled.get(key, key)
            group = where.get(name)
            if group is None:
                placed[name] = value
            else:
                placed.setdefault(group, {})[name] = value
        return placed

    @model_validator(mode="after")
    def _choices(self):
        for name, f in type(self).model_fields.items():
            choices = None if _is_group(f) else meta(f)["choices"]
            value = getattr(self, name)
            if choices and value is not None and value not in choices:
                raise ValueError(f"option {name}: must be one of {choices}, got {value!r}")
        return self


def meta(f: FieldInfo) -> dict:
    return f.json_schema_extra or {"aliases": [], "choices": None}


def _is_group(f: FieldInfo) -> bool:
    return isinstance(f.annotation, type) and issubclass(f.annotation, Options)


_KINDS = {"int_parsing": "int", "int_type": "int", "int_from_float": "int", "float_parsing": "float",
          "float_type": "float", "bool_parsing": "bool", "bool_type": "bool", "string_type": "str",
          "finite_number": "a finite number", "list_type": "list"}


def describe(err: ValidationError) -> str:
    """The first error, one line, naming the option: `option max_steps: expected int, got 'many'`."""
    e = err.errors(include_url=False)[0]
    name = next((str(part) for part in reversed(e["loc"]) if isinstance(part, str)), "")
    given, kind, ctx = e.get("input"), e["type"], e.get("ctx") or {}
    if kind == "value_error":  # raised by a validator, its message already whole
        return str(ctx.get("error", e["msg"]))
    if kind == "extra_forbidden":
        return f"unknown option {name!r}"
    if kind == "missing":
        return f"option {name}: required"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        words = "at least" if kind == "greater_than_equal" else "greater than"
        return f"option {name}: must be {words} {_number(bound)}, got {_number(given)}"
    if kind in _KINDS:
        return f"option {name}: expected {_KINDS[kind]}, got {given!r}"
    return f"option {name}: {e['msg']}, got {given!r}"


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and math.isfinite(value) and value == int(value) else value


def read_yaml_mapping(path, flag: str | None, error: type[Exception] = OptionError,
                      values: str = "option names to values") -> dict:
    """The one place a YAML file is read (`--config`, `--search_space`, a task file): a mapping,
    or a one-line error naming the flag (if any) and the file."""
    import yaml  # only when a file is read: `dept budget` starts fast

    path = Path(path)
    where = f"{flag} {path}" if flag else str(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise error(f"{where}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise error(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise error(f"{where}: expected a mapping of {values}")
    return loaded
