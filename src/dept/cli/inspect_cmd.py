"""`dept inspect`: an adapter's prompt vectors read through their nearest vocabulary tokens, and its update's size."""

from __future__ import annotations

import argparse
import json

from ..options import Options, opt
from .arguments import add_options, options_from_args


class InspectOptions(Options):
    top_k: int = opt(5, minimum=1)
    """nearest vocabulary tokens shown per prompt vector"""
    json: bool = opt(False)
    """print the whole report as JSON (with every position's update norm)"""
    plot: str | None = opt(None)
    """also write a PNG: prompt cosine-similarity heatmap, update norm by position"""
    model_name_or_path: str | None = opt(None, 'model')
    """base model (default: the one named in the adapter)"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("inspect", help="nearest tokens of the prompt vectors, size of the update",
                                   parents=parents, description=__doc__.splitlines()[0])
    parser.add_argument("adapter", metavar="ADAPTER", help="adapter folder (dept's, PEFT's prompt tuning, or "
                        "the reference DePT code's)")
    add_options(parser, InspectOptions)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from ..adapter_io import base_model_facts
    from ..inspect import format_report, inspect_adapter, plot_report
    from ..pretrained import load_base
    from ..trained import read_trained

    options = options_from_args(args, InspectOptions)
    trained = read_trained(args.adapter)
    base, tokenizer, family = load_base(trained.base_model(options.model_name_or_path),
                                        family=trained.base.get("model_family"))
    trained.check_base(base_model_facts(base, family.name))

    embedding = base.get_input_embeddings()
    with torch.no_grad():  # the rows as the model receives them (Gemma scales its table by √d inside)
        table = embedding(torch.arange(embedding.num_embeddings, device=embedding.weight.device))  # (V, d)
    report = inspect_adapter(trained, table, tokens=tokenizer.convert_ids_to_tokens, top_k=options.top_k)
    if options.plot:
        report["plot"] = str(plot_report(report, options.plot))
    if options.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0
