"""`dept predict`: an adapter and inputs (JSONL file or standard input) in; one prediction per line out.

Each input line is a JSON object with a "source" field (the formatted input, as
`dept tasks` shows it) or, if not JSON, the source text itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from types import SimpleNamespace

from ..tasks.meta import DECODERS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="predict with an adapter, one line per input",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="adapter folder (from dept train)")
    parser.add_argument("--input", default="-", help="JSONL file, or - for standard input (default)")
    parser.add_argument("--decoder", choices=DECODERS, help="default: the adapter's")
    parser.add_argument("--model", help="base model (default: the one named in the adapter)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.set_defaults(func=run)


def read_sources(stream, name: str) -> list[str]:
    sources = []
    for number, line in enumerate(stream, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SystemExit(f"dept predict: {name}, line {number}: invalid JSON ({err.msg})")
            if not isinstance(record.get("source"), str):
                raise SystemExit(f"dept predict: {name}, line {number}: expected a string field 'source'")
            sources.append(record["source"])
        else:
            sources.append(line)
    return sources


def run(args: argparse.Namespace) -> int:
    from ..adapter_io import AdapterFileError
    from ..evaluation import predict
    from ..inference import load_trained

    if args.input == "-":
        sources = read_sources(sys.stdin, "<stdin>")
    else:
        try:
            with open(args.input, encoding="utf-8") as f:
                sources = read_sources(f, args.input)
        except OSError as err:
            raise SystemExit(f"dept predict: cannot read {args.input}: {err.strerror}")
    try:
        loaded = load_trained(args.adapter, args.model)
    except AdapterFileError as err:
        raise SystemExit(f"dept predict: {err}")
    candidates = score_range = None
    task = loaded.task.task
    if task:
        from ..evaluation import regression_range
        from ..tasks import candidate_targets

        candidates = candidate_targets(task, loaded.task.target_words)
        score_range = regression_range(task)
    examples = [SimpleNamespace(source=s, target="", label=None) for s in sources]
    predictions = predict(loaded.model, loaded.collator, examples,
                          decoder=args.decoder or loaded.task.decoder, candidates=candidates,
                          batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, score_range=score_range)
    for source, prediction in zip(sources, predictions):
        print(json.dumps({"source": source, "prediction": prediction}))
    return 0
