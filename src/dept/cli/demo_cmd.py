"""`dept demo`: the main job on an embedded default, offline.

Trains DePT on the packaged SmolLM2-135M for a few minutes on CPU on the demo
sentiment task that ships inside the package, prints the validation metric before and
after training, and leaves the adapter, results.json, metrics.jsonl and curves.png in
runs/demo. Every `dept train` flag can be given to change it.
"""

from __future__ import annotations

import argparse
import json

from ..training.options import TrainOptions
from ..training.outputs import is_run_folder
from .arguments import add_options, options_from_args

# A few minutes on 2 CPU cores; the validation set is the packaged dev split.
DEMO = dict(model_name_or_path="smollm2-135m", task="demo", output_dir="runs/demo", method="dept",
            vanilla_length=40, prompt_length=20, max_length=64, max_steps=60, eval_steps=30,
            save_steps=30, logging_steps=5, per_device_train_batch_size=8)


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help="train DePT on SmolLM2 on the bundled demo task (offline)",
                                   description=__doc__.splitlines()[0], parents=parents)
    add_options(parser, TrainOptions, config_file=True, defaults=DEMO)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..training import train

    options = options_from_args(args, TrainOptions, defaults=DEMO)
    # A second `dept demo` replaces the first, but only in its own default folder and only
    # when dept made it: any other folder needs --overwrite_output_dir, as for `dept train`.
    own = options.run.output_dir == DEMO["output_dir"] and is_run_folder(Path(options.run.output_dir))
    if own and not options.run.resume and "overwrite_output_dir" not in vars(args):
        options = options.replaced(overwrite_output_dir=True)
    results = train(options)
    if not results:
        return 0
    metric = results["main_metric"]
    before = (results.get("before_training") or {}).get(metric)
    after = (results.get("best_validation") or {}).get(metric)
    print(json.dumps({"validation_before": results.get("before_training"),
                      "validation_after": results.get("best_validation"), "test": results.get("test")}, indent=2))
    if before is not None and after is not None:
        print(f"\n{options.run.task} validation {metric}: {before:.3f} before training -> {after:.3f} after "
              f"{results['steps']} steps ({results['train_seconds']:.0f} s, {results['trainable_params']:,} "
              f"trainable parameters)")
    print(f"adapter, results.json, metrics.jsonl and curves.png are in {options.run.output_dir}/")
    return 0
