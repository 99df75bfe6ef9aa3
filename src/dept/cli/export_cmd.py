"""`dept export`: write a dept adapter in another program's format (PEFT prompt tuning)."""

from __future__ import annotations

import argparse
import json

from ..options import Options, opt
from .arguments import add_options, options_from_args

FORMATS = ("peft",)


class ExportOptions(Options):
    to: str = opt('peft', choices=FORMATS)
    """the format to write: peft (PEFT's PROMPT_TUNING folder; rank-0 adapters only)"""
    output_dir: str = opt(...)
    """the folder to write (new, empty, or one dept exported into before)"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("export", help="write an adapter for PEFT", parents=parents,
                                   description=__doc__.splitlines()[0])
    parser.add_argument("adapter", metavar="ADAPTER", help="adapter folder (from dept train)")
    add_options(parser, ExportOptions)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..interop import export_peft
    from ..trained import read_trained

    options = options_from_args(args, ExportOptions)
    trained = read_trained(args.adapter)  # checked against its own record
    out = export_peft(trained.config, dict(trained.tensors), dict(trained.base), options.output_dir,
                      source=args.adapter)
    print(json.dumps({"format": options.to, "output_dir": str(out), "prompt_length": trained.config.prompt_length,
                      "hidden_size": trained.base["hidden_size"], "model_family": trained.base.get("model_family")}))
    return 0
