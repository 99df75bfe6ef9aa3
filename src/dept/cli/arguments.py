"""Command-line flags generated from an `Options` class (dept/options.py), the same way for
every command, so `--help`, YAML files and the checks never drift.

argparse only collects the text of each flag; pydantic turns it into the option's type and
checks it, so a bad value reads the same from a flag, a YAML file or code. Every flag is
accepted with underscores and with dashes (`--data_dir`, `--data-dir`), and so is every alias.
Nested groups (`dept train`'s adapter, data, optimiser, evaluation, run) are sections of
`--help`; their options keep flat flags. `--config run.yaml` (where a command takes it)
supplies values under the same names, flat or nested by group; flags given on the command
line win.
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path

from ..errors import OptionError
from ..options import Options, meta, opt, read_yaml_mapping


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


def add_options(parser: argparse.ArgumentParser, cls: type[Options], *, config_file: bool = False,
                defaults: dict | None = None) -> None:
    """One flag per option of `cls` (with its aliases), a section of --help per group."""
    if config_file:
        parser.add_argument("--config", help="YAML file of options (keys as the flags, without --; flat or "
                                             "nested by group)")
    sections: dict[str | None, argparse._ActionsContainer] = {None: parser}
    for group, name, f in cls.leaves():
        if group not in sections:
            doc = cls.model_fields[group].annotation.__doc__ or ""
            sections[group] = parser.add_argument_group(group, doc.strip().splitlines()[0] if doc else None)
        default = (defaults or {}).get(name, None if f.is_required() else f.default)
        # argparse %-formats help text: a literal "6%" would crash --help.
        help_text = " ".join((f.description or "").split()).replace("%", "%%")
        if not f.is_required() and default is not None:
            help_text += f" (default: {default})"
        names, info = flag_names(name, meta(f)["aliases"]), meta(f)
        kwargs = dict(dest=name, default=argparse.SUPPRESS, help=help_text)
        if typing.get_origin(f.annotation) is list:  # a repeatable flag: --adapter a=x --adapter b=y
            sections[group].add_argument(*names, action="append", metavar=name.upper(), **kwargs)
        elif f.annotation is bool:  # `--resume` alone means true; `--resume false` is accepted too
            sections[group].add_argument(*names, nargs="?", const=True, metavar="BOOL", **kwargs)
        else:
            sections[group].add_argument(*names, choices=info["choices"], required=f.is_required(),
                                         metavar=None if info["choices"] else name.upper(), **kwargs)


def options_from_args(args: argparse.Namespace, cls: type[Options], defaults: dict | None = None):
    """`defaults` first, then the YAML config (if any), then command-line flags over both."""
    values: dict = dict(defaults or {})
    if getattr(args, "config", None):
        values.update(read_config(Path(args.config), cls))
    names = {name for _, name, _ in cls.leaves()}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return cls(**values)


def read_config(path: Path, cls: type[Options]) -> dict:
    """The file's options, flat (a nested group's mapping is opened), checked with the file's name."""
    loaded = read_yaml_mapping(path, "--config")
    groups = cls.groups()
    flat = {}
    for key, value in loaded.items():
        if key in groups and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    spelled = cls.spellings()
    unknown = sorted(str(k) for k in flat if k not in spelled)
    if unknown:
        raise OptionError(f"--config {path}: unknown option(s) {unknown}")
    values = {spelled[k]: v for k, v in flat.items()}
    try:
        cls(**values)  # names, types and bounds, said with the file's name
    except OptionError as err:
        raise OptionError(f"--config {path}: {err}") from None
    return values


class EngineOptions(Options):
    """Which engine decodes (`dept predict`, `dept eval`): the options both commands share."""

    engine: str = opt("embedded", choices=("embedded", "vllm"))
    """embedded: dept's own; vllm: vLLM decodes from the adapter's prompt embeddings (decoder-only models;
    `make install-vllm`)"""
    engine_args: str | None = opt(None)
    """--engine vllm: vLLM's own options, a JSON object or a YAML file (tensor_parallel_size, dtype,
    max_model_len, gpu_memory_utilization, ...)"""
