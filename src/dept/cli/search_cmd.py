"""`dept search`: tune `dept train` options with Optuna (TPE, median pruning); every train flag is accepted."""

from __future__ import annotations

import argparse
import json
import sys

from ..search import SearchOptions
from ..training.options import TrainOptions
from .arguments import add_options, options_from_args

DEFAULTS = {"output_dir": "runs/search"}


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("search", help="tune learning rates (or any train option) with Optuna",
                                   parents=parents, description=__doc__.splitlines()[0])
    add_options(parser, TrainOptions, config_file=True, defaults=DEFAULTS)
    group = parser.add_argument_group("search")
    add_options(group, SearchOptions)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..search import search

    options = options_from_args(args, TrainOptions, defaults=DEFAULTS)
    names = set(SearchOptions.model_fields)
    search_options = SearchOptions(**{k: v for k, v in vars(args).items() if k in names})
    summary = search(options, search_options)
    print(json.dumps(summary, indent=2))
    if "best_config" in summary:
        print(f"train the best with: dept train --config {summary['best_config']}", file=sys.stderr)
    return 0
