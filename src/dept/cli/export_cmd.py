"""`dept export`: write a dept adapter in another program's format (PEFT prompt tuning)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from ..options import check_options, opt
from .arguments import add_options, options_from_args

FORMATS = ("peft",)


@dataclass
class ExportOptions:
    to: str = opt("peft", "the format to write: peft (PEFT's PROMPT_TUNING folder; rank-0 adapters only)",
                  choices=FORMATS)
    output_dir: str = opt(None, "the folder to write (new, empty, or one dept exported into before)",
                          required=True)

    def __post_init__(self) -> None:
        check_options(self)


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("export", help="write an adapter for PEFT", parents=parents,
                                   description=__doc__.splitlines()[0])
    parser.add_argument("adapter", metavar="ADAPTER", help="adapter folder (from dept train)")
    add_options(parser, ExportOptions)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..adapter_io import read_adapter, read_adapter_config
    from ..interop import export_peft

    options = options_from_args(args, ExportOptions)
    config, recorded = read_adapter_config(args.adapter)
    _, tensors = read_adapter(args.adapter, recorded)  # checked against its own record
    out = export_peft(config, tensors, recorded, options.output_dir, source=args.adapter)
    print(json.dumps({"format": options.to, "output_dir": str(out), "prompt_length": config.prompt_length,
                      "hidden_size": recorded["hidden_size"], "model_family": recorded.get("model_family")}))
    return 0
