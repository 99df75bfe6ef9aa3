"""`dept eval`: an adapter, a task and a split in; the task's metrics out, as JSON."""

from __future__ import annotations

import argparse
import json

from ..options import opt
from ..tasks.meta import DECODERS
from ..tasks.splits import PROTOCOLS
from .arguments import EngineOptions, add_options, options_from_args

SPLITS = ("train", "validation", "test")


class EvalOptions(EngineOptions):
    adapter: str = opt(...)
    """adapter folder (from dept train)"""
    task: str | None = opt(None, 'task_name')
    """task name (default: the one saved with the adapter)"""
    data_dir: str | None = opt(None)
    """folder of the task's official files (suite or task folder)"""
    from_hub: bool = opt(False)
    """load the task from the Hugging Face hub instead of data_dir"""
    split: str = opt('validation', choices=SPLITS)
    """which split to score"""
    test_file: str | None = opt(None)
    """an adapter of your own task: score this file (.csv, .tsv, .jsonl, .json, .parquet), read with the
    adapter's template and labels"""
    protocol: str | None = opt(None, choices=PROTOCOLS)
    """split protocol, which also picks QA scoring: paper: first gold answer, official: all (default: the
    adapter's)"""
    split_seed: int | None = opt(None, 'seed')
    """seed of the paper's split protocol (default: the adapter's), so validation is the split training held
    out"""
    decoder: str | None = opt(None, choices=DECODERS)
    """how answers are read (default: the adapter's)"""
    model_name_or_path: str | None = opt(None, 'model')
    """base model (default: the one named in the adapter)"""
    per_device_eval_batch_size: int = opt(32, 'eval_batch_size', minimum=1)
    """evaluation batch"""
    max_eval_samples: int | None = opt(None, minimum=1)
    """score only the first N examples"""
    max_new_tokens: int = opt(16, minimum=1)
    """decoder=generate: new tokens per answer"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("eval", help="score an adapter on a task split", parents=parents,
                                   description=__doc__.splitlines()[0])
    add_options(parser, EvalOptions)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..evaluation import evaluate
    from ..inference import load_trained
    from ..tasks import get_task, load_task, qa_scoring_for
    from ..tasks.custom import CustomTask

    options = options_from_args(args, EvalOptions)
    loaded = load_trained(options.adapter, options.model_name_or_path)
    meta = loaded.adapter.meta
    task = get_task(options.task) if options.task else loaded.adapter.task
    if task is None:
        raise UserError(f"--adapter {options.adapter}: the adapter names no task; pass --task")
    if options.test_file:
        if not meta.custom:
            raise UserError(f"--test_file: adapter {options.adapter} was trained on the built-in task {task.name!r}; "
                            f"score it with --data_dir and --split")
        examples = CustomTask.from_description(meta.custom).read_split(options.test_file)
        split = options.test_file
    elif meta.custom and not options.task:
        raise UserError(f"--adapter {options.adapter}: trained on your own task {task.name!r}, whose files dept "
                        f"does not keep; pass the file to score with --test_file")
    else:
        examples = load_task(task.name, options.split, options.data_dir,
                             protocol=options.protocol or meta.protocol,
                             seed=options.split_seed if options.split_seed is not None else meta.split_seed,
                             target_words=meta.target_words, from_hub=options.from_hub)
        split = options.split
    if options.max_eval_samples:
        examples = examples[:options.max_eval_samples]
    decoder = options.decoder or meta.decoder
    qa_scoring = qa_scoring_for(task, options.protocol or meta.protocol)
    if options.engine == "vllm":
        metrics = _evaluate_vllm(options, loaded, task, examples, decoder, qa_scoring)
    else:
        metrics = evaluate(loaded.model, loaded.collator, task, examples, decoder=decoder,
                           target_words=meta.target_words, batch_size=options.per_device_eval_batch_size,
                           max_new_tokens=options.max_new_tokens, qa_scoring=qa_scoring)
    print(json.dumps({"task": task.name, "split": split, "examples": len(examples), "decoder": decoder,
                      **({"qa_scoring": qa_scoring} if qa_scoring else {}), **metrics}))
    return 0


def _evaluate_vllm(options: EvalOptions, loaded, task, examples, decoder: str, qa_scoring) -> dict:
    """The task's metrics over vLLM's answers (regression tasks stay with the embedded engine)."""
    from ..errors import UserError
    from ..tasks import candidate_targets, compute_metrics
    from ..vllm_engine import run_predict

    if task.kind == "regression":
        raise UserError(f"--engine vllm: task {task.name} is a regression; score it with the embedded engine")
    candidates = candidate_targets(task, loaded.adapter.meta.target_words)
    predictions = run_predict(loaded, loaded.collator, [e.source for e in examples],
                              base_model=options.model_name_or_path, options=options.engine_args, decoder=decoder,
                              candidates=candidates, max_new_tokens=options.max_new_tokens,
                              batch_size=options.per_device_eval_batch_size)
    return compute_metrics(task, predictions, examples, qa_scoring=qa_scoring)
