"""`dept train`: train DePT (or pt, lora, full) on a task; flags generated from TrainOptions."""

from __future__ import annotations

import argparse
import json
import sys

from ..training.options import TrainOptions
from .arguments import add_options, options_from_args


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train DePT (or pt, lora, full) on a task", parents=parents,
                                   description=__doc__.splitlines()[0])
    add_options(parser, TrainOptions, config_file=True)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..training import train

    options = options_from_args(args, TrainOptions)
    results = train(options)
    if results:
        summary = {k: results[k] for k in ("task", "main_metric", "qa_scoring", "best_step", "test",
                                           "trainable_params", "train_seconds") if k in results}
        summary["validation_before"] = results.get("before_training")
        summary["validation_best"] = results.get("best_validation")
        print(json.dumps(summary, indent=2))
        print(f"adapter and results in {options.run.output_dir}", file=sys.stderr)
    return 0
