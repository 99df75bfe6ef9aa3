"""`dept eval`: an adapter, a task and a split in; the task's metrics out, as JSON."""

from __future__ import annotations

import argparse
import json

from ..tasks.meta import DECODERS
from ..tasks.splits import PROTOCOLS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="score an adapter on a task split",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="adapter folder (from dept train)")
    parser.add_argument("--task", help="task name (default: the one saved with the adapter)")
    parser.add_argument("--data_dir", "--data-dir", help="folder of the task's files")
    parser.add_argument("--from_hub", action="store_true", help="load the task from the hub")
    parser.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    parser.add_argument("--protocol", choices=PROTOCOLS,
                        help="split protocol (default: the one the adapter was trained with, else paper)")
    parser.add_argument("--seed", type=int, help="seed of the paper's split protocol (default: the "
                        "adapter's training seed, else 42), so validation is the split training held out")
    parser.add_argument("--decoder", choices=DECODERS, help="default: the adapter's")
    parser.add_argument("--model", help="base model (default: the one named in the adapter)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_samples", type=int, help="score only the first N examples")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..adapter_io import AdapterFileError
    from ..evaluation import evaluate
    from ..inference import load_trained
    from ..tasks import TaskError, load_task

    try:
        loaded = load_trained(args.adapter, args.model)
    except AdapterFileError as err:
        raise SystemExit(f"dept eval: {err}")
    task = args.task or loaded.task.task
    if not task:
        raise SystemExit("dept eval: the adapter names no task; pass --task")
    target_words = loaded.task.target_words
    protocol = args.protocol or loaded.task.protocol
    seed = args.seed if args.seed is not None else loaded.task.seed
    try:
        examples = load_task(task, args.split, args.data_dir, protocol=protocol, seed=seed,
                             target_words=target_words, from_hub=args.from_hub)
    except TaskError as err:
        raise SystemExit(f"dept eval: {err}")
    if args.max_samples:
        examples = examples[:args.max_samples]
    decoder = args.decoder or loaded.task.decoder
    metrics = evaluate(loaded.model, loaded.collator, task, examples, decoder=decoder,
                       target_words=target_words, batch_size=args.batch_size)
    print(json.dumps({"task": task, "split": args.split, "examples": len(examples), "decoder": decoder,
                      **metrics}))
    return 0
