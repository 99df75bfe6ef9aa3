"""`dept demo`: the main job on an embedded default, offline.

Trains DePT on the packaged SmolLM2-135M for a few minutes on CPU on the demo
sentiment task that ships inside the package, prints the validation metric before and
after training, and leaves the adapter, results.json, metrics.jsonl and curves.png in
runs/demo. Every `dept train` flag can be given to change it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from .train_cmd import add_options, options_from_args

# A few minutes on 2 CPU cores; the validation set is the packaged dev split.
DEMO = dict(model_name_or_path="smollm2-135m", task="demo", output_dir="runs/demo", method="dept",
            vanilla_length=40, prompt_length=20, max_length=64, max_steps=60, eval_steps=30,
            save_steps=30, logging_steps=5, per_device_train_batch_size=8, overwrite_output_dir=True)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="train DePT on SmolLM2 on the bundled demo task (offline)",
                                   description=__doc__.splitlines()[0])
    add_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training import train

    options = options_from_args(args, defaults=DEMO)
    if options.resume:
        options = replace(options, overwrite_output_dir=False)
    results = train(options)
    if not results:
        return 0
    metric = results["main_metric"]
    before = (results.get("before_training") or {}).get(metric)
    after = (results.get("best_validation") or {}).get(metric)
    print(json.dumps({"validation_before": results.get("before_training"),
                      "validation_after": results.get("best_validation"), "test": results.get("test")}, indent=2))
    if before is not None and after is not None:
        print(f"\n{options.task} validation {metric}: {before:.3f} before training -> {after:.3f} after "
              f"{results['steps']} steps ({results['train_seconds']:.0f} s, {results['trainable_params']:,} "
              f"trainable parameters)")
    print(f"adapter, results.json, metrics.jsonl and curves.png are in {options.output_dir}/")
    return 0
