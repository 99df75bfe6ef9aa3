"""`dept budget`: pick DePT's prompt length m and rank r at the parameter count of vanilla PT.

Solves l·d = m·d + (s+d)·r for m (given --rank) or r (given --prompt_length); d comes from
--hidden_size or from a model's config (--model).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..budget import BudgetError, solve_budget
from pydantic import model_validator

from ..options import Options, opt
from .arguments import add_options, options_from_args


class BudgetOptions(Options):
    vanilla_length: int = opt(..., 'l', minimum=1)
    """l: the vanilla prompt length whose budget to match"""
    max_length: int = opt(..., 's', 'max_seq_length', minimum=1)
    """s: the maximum input length"""
    hidden_size: int | None = opt(None, 'd', minimum=1)
    """d: the model's hidden size (or give --model)"""
    model_name_or_path: str | None = opt(None, 'model')
    """model name, local folder or packaged alias whose hidden size to use (or give --hidden_size)"""
    rank: int | None = opt(None, 'r', minimum=0)
    """r: solve for the prompt length m (or give --prompt_length)"""
    prompt_length: int | None = opt(None, 'm', minimum=0)
    """m: solve for the rank r (or give --rank)"""
    prompt_multiple: int | None = opt(None, "block_size", minimum=1)
    """round m down to a multiple of this (vLLM's prefix cache keeps whole blocks of 16 vectors), then solve r"""
    json: bool = opt(False)
    """print one JSON object"""

    @model_validator(mode="after")
    def _one_of_each(self):
        if (self.hidden_size is None) == (self.model_name_or_path is None):
            raise BudgetError("give exactly one of --hidden_size or --model")
        if (self.rank is None) == (self.prompt_length is None):
            raise BudgetError("give exactly one of --rank or --prompt_length; the other is solved for")
        return self


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("budget", help="solve l·d = m·d + (s+d)·r for m or r", parents=parents,
                                   description=__doc__.splitlines()[0])
    add_options(parser, BudgetOptions)
    parser.set_defaults(func=run)
    return parser


def hidden_size_of(model: str) -> int:
    from ..pretrained import load_config, resolve

    config = load_config(resolve(model))
    for key in ("hidden_size", "d_model", "n_embd"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise BudgetError(f"--model {model}: cannot find the hidden size in its config")


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args, BudgetOptions)
    d = options.hidden_size if options.hidden_size is not None else hidden_size_of(options.model_name_or_path)
    budget = solve_budget(options.vanilla_length, options.max_length, d,
                          rank=options.rank, prompt_length=options.prompt_length,
                          prompt_multiple=options.prompt_multiple)
    if options.json:
        print(json.dumps(budget.to_dict()))
    else:
        print(f"DePT prompt length m = {budget.prompt_length}, rank r = {budget.rank} "
              f"(s = {budget.max_length}, d = {budget.hidden_size})")
        print(f"trainable parameters {budget.trainable_params:,} vs vanilla PT (l = {budget.vanilla_length}) "
              f"{budget.vanilla_params:,}")
    if not budget.exact:
        print(f"dept budget: no integer shape matches l·d = {budget.vanilla_params} exactly; "
              f"this is the closest under budget ({budget.vanilla_params - budget.trainable_params} "
              f"parameters short)", file=sys.stderr)
    return 0
