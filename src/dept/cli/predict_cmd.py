"""`dept predict`: an adapter and inputs (JSONL file or standard input) in; one prediction per line out.

Each input line is a JSON object of the task's raw fields ({"sentence": ...},
{"premise": ..., "hypothesis": ...}), formatted with the adapter's task template, or an
object with a "source" field holding the already formatted input (as `dept tasks --show
TASK` describes it), or a line of plain text, taken as the formatted input itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from types import SimpleNamespace

from ..config import OVERFLOW_POLICIES
from ..errors import UserError
from ..options import opt
from ..tasks.meta import DECODERS
from .arguments import EngineOptions, add_options, options_from_args

log = logging.getLogger("dept")


class PredictOptions(EngineOptions):
    adapter: str = opt(...)
    """adapter folder (from dept train)"""
    input: str = opt('-')
    """JSONL file, or - for standard input"""
    decoder: str | None = opt(None, choices=DECODERS)
    """how answers are read (default: the adapter's)"""
    model_name_or_path: str | None = opt(None, 'model')
    """base model (default: the one named in the adapter)"""
    per_device_eval_batch_size: int = opt(32, 'eval_batch_size', minimum=1)
    """prediction batch"""
    max_new_tokens: int = opt(16, minimum=1)
    """decoder=generate: new tokens per answer"""
    on_overflow: str | None = opt(None, choices=OVERFLOW_POLICIES)
    """inputs longer than the adapter's max_length: truncate (said once on stderr) or error naming the line
    (default: the adapter's)"""


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("predict", help="predict with an adapter, one line per input", parents=parents,
                                   description=__doc__.splitlines()[0])
    add_options(parser, PredictOptions)
    parser.set_defaults(func=run)
    return parser


def read_inputs(stream, name: str) -> list[tuple[int, object]]:
    """(line number, input) per non-blank line: a dict of fields, or a formatted source string."""
    inputs = []
    for number, line in enumerate(stream, start=1):
        text = line.strip()
        if not text:
            continue
        if text[0] in '{["':
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise UserError(f"{name}, line {number}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{name}, line {number}: expected a JSON object of fields, "
                                f"got a JSON {type(record).__name__}")
            if "source" in record and not isinstance(record["source"], str):
                raise UserError(f"{name}, line {number}: field 'source' must be a string")
            inputs.append((number, record.get("source", record)))
        else:
            inputs.append((number, line.rstrip("\n")))
    return inputs


def to_sources(inputs: list[tuple[int, object]], adapter, name: str) -> list[str]:
    """Each input as the adapter's formatted source text (raw fields go through its task's template)."""
    return [item if isinstance(item, str) else adapter.source(item, where=f"{name}, line {number}")
            for number, item in inputs]


def check_lengths(collator, sources: list[str], numbers: list[int], policy: str, name: str) -> None:
    """Refuse (policy 'error') or count (policy 'truncate') inputs longer than the adapter's s."""
    whole = replace(collator, truncate=False)
    over = [(n, length) for n, s in zip(numbers, sources) if (length := len(whole.source_ids(s))) > collator.max_length]
    if not over:
        return
    if policy == "error":
        number, length = over[0]
        raise UserError(f"{name}, line {number}: the input has {length} tokens, more than the adapter's "
                        f"max_length {collator.max_length} (on_overflow=error; pass --on_overflow truncate "
                        f"to keep the first {collator.max_length})")
    log.info("truncated %d of %d inputs to the adapter's max_length of %d tokens (lines %s)", len(over),
             len(sources), collator.max_length, ", ".join(str(n) for n, _ in over[:5]) + (", ..." if len(over) > 5
                                                                                         else ""))


def run(args: argparse.Namespace) -> int:
    from ..inference import load_trained

    options = options_from_args(args, PredictOptions)
    name = "<stdin>" if options.input == "-" else options.input
    if options.input == "-":
        inputs = read_inputs(sys.stdin, name)
    else:
        try:
            with open(options.input, encoding="utf-8") as f:
                inputs = read_inputs(f, name)
        except OSError as err:
            raise UserError(f"--input {options.input}: cannot read it ({err.strerror})") from None
        except UnicodeDecodeError:
            raise UserError(f"--input {options.input}: not UTF-8 text") from None
    loaded = load_trained(options.adapter, options.model_name_or_path)
    adapter = loaded.adapter
    sources = to_sources(inputs, adapter, name)
    policy = options.on_overflow or adapter.config.on_overflow
    check_lengths(loaded.collator, sources, [n for n, _ in inputs], policy, name)
    collator = replace(loaded.collator, truncate=True)  # overflow was refused or reported above
    if options.engine == "vllm":
        predictions = _predict_vllm(options, loaded, collator, sources)
    else:
        predictions = _predict_embedded(options, loaded, collator, sources)
    for source, prediction in zip(sources, predictions):
        print(json.dumps({"source": source, "prediction": prediction}))
    return 0


def _predict_embedded(options: PredictOptions, loaded, collator, sources: list[str]) -> list[str]:
    from ..evaluation import predict

    adapter = loaded.adapter
    examples = [SimpleNamespace(source=s, target="", label=None) for s in sources]
    return predict(loaded.model, collator, examples, decoder=options.decoder or adapter.meta.decoder,
                   candidates=adapter.candidates, batch_size=options.per_device_eval_batch_size,
                   max_new_tokens=options.max_new_tokens, score_range=adapter.score_range)


def _predict_vllm(options: PredictOptions, loaded, collator, sources: list[str]) -> list[str]:
    from ..vllm_engine import run_predict

    return run_predict(loaded, collator, sources, base_model=options.model_name_or_path, options=options.engine_args,
                       decoder=options.decoder or loaded.adapter.meta.decoder, candidates=loaded.adapter.candidates,
                       max_new_tokens=options.max_new_tokens, batch_size=options.per_device_eval_batch_size)
