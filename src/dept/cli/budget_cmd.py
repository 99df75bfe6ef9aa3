"""`dept budget`: pick DePT's prompt length m and rank r at the parameter count of vanilla PT."""

from __future__ import annotations

import argparse
import json
import sys

from ..budget import BudgetError, solve_budget


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "budget", help="solve l·d = m·d + (s+d)·r for m or r",
        description="Solve l·d = m·d + (s+d)·r: DePT (prompt m, rank r) at vanilla PT's budget (length l).")
    parser.add_argument("--vanilla-length", "-l", type=int, required=True, help="l, vanilla prompt length")
    parser.add_argument("--max-length", "-s", type=int, required=True, help="s, maximum input length")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--hidden-size", "-d", type=int, help="d, the model's hidden size")
    size.add_argument("--model", help="model name, local folder or packaged alias whose hidden size to use")
    solve = parser.add_mutually_exclusive_group(required=True)
    solve.add_argument("--rank", "-r", type=int, help="r; solve for the prompt length m")
    solve.add_argument("--prompt-length", "-m", type=int, help="m; solve for the rank r")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def hidden_size_of(model: str) -> int:
    from transformers import AutoConfig

    from ..pretrained import resolve

    config = AutoConfig.from_pretrained(resolve(model))
    for key in ("hidden_size", "d_model", "n_embd"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise BudgetError(f"{model}: cannot find the hidden size in its config")


def run(args: argparse.Namespace) -> int:
    try:
        d = args.hidden_size if args.hidden_size is not None else hidden_size_of(args.model)
        budget = solve_budget(args.vanilla_length, args.max_length, d,
                              rank=args.rank, prompt_length=args.prompt_length)
    except BudgetError as err:
        print(f"dept budget: {err}", file=sys.stderr)
        return 2
    if args.json:
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
