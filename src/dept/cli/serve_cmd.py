"""`dept serve`: many task adapters behind one frozen model over HTTP (OpenAI-compatible
completions, classification, models, health, Prometheus metrics), batched across adapters."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from ..errors import OptionError
from ..options import opt
from .arguments import EngineOptions, add_options, options_from_args

log = logging.getLogger("dept")


class ServeOptions(EngineOptions):
    adapter: list[str] = opt([])
    """NAME=FOLDER of an adapter to serve (repeat the flag for more)"""
    adapters_dir: str | None = opt(None)
    """serve every adapter folder in DIR (named after its folder); with --allow_adapter_updates, POST
    /v1/adapters loads paths inside it"""
    model_name_or_path: str | None = opt(None, 'model')
    """the base model (default: the one the adapters name)"""
    host: str = opt('127.0.0.1')
    """address to bind: loopback unless told otherwise"""
    port: int = opt(8000, minimum=0)
    """port"""
    max_batch_size: int = opt(16, minimum=1)
    """embedded engine: rows per batch the worker runs (1: no batching)"""
    max_batch_wait_ms: float = opt(5.0, minimum=0)
    """embedded engine: how long the first request of a batch waits for others"""
    max_queue: int = opt(256, minimum=1)
    """requests waiting at most (--engine vllm: in flight); more are refused with 429"""
    max_queue_wait: float = opt(5.0, minimum=0)
    """refuse new requests (429, Retry-After) while the queued work is expected to take longer than this many
    seconds at the service time measured; 0: count only"""
    mix_adapters: bool = opt(True)
    """embedded engine: batch requests for different adapters together (false: only requests for the same adapter share a batch)"""
    continuous_batching: bool = opt(True)
    """embedded engine, decoder-only models: queued generations join a running decode between steps and queued classifications
    run between two steps (false: a batch runs to its end first; for comparison)"""
    max_tokens: int = opt(256, minimum=1)
    """the largest max_tokens a completion may ask for"""
    request_timeout: float = opt(60.0, positive=True)
    """seconds a request may take before 504"""
    shutdown_timeout: float = opt(30.0, positive=True)
    """after SIGTERM: seconds to finish the requests in flight (new ones get 503); what is left then is
    answered 503 with Retry-After, and the server exits 0"""
    api_key: str | None = opt(None)
    """require Authorization: Bearer KEY on every endpoint but /health (also DEPT_API_KEY)"""
    allow_adapter_updates: bool = opt(False)
    """allow POST /v1/adapters and DELETE /v1/adapters/NAME"""
    dtype: str = opt('auto', choices=('auto', 'float32', 'bfloat16'))
    """auto (bf16 on CUDA where supported, else fp32), float32, bfloat16"""


    def named_adapters(self) -> dict[str, str]:
        named: dict[str, str] = {}
        for item in self.adapter:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise OptionError(f"--adapter {item!r}: expected NAME=FOLDER")
            if name in named:
                raise OptionError(f"--adapter: the name {name!r} is given twice")
            named[name] = path
        if self.adapters_dir:
            root = Path(self.adapters_dir)
            if not root.is_dir():
                raise OptionError(f"--adapters_dir {root}: no such folder")
            for folder in sorted(p for p in root.iterdir() if (p / "adapter_config.json").is_file()):
                named.setdefault(folder.name, str(folder))
        return named


def add_parser(subparsers, parents) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("serve", help="serve adapters over HTTP, batched across adapters",
                                   parents=parents, description=__doc__.splitlines()[0])
    add_options(parser, ServeOptions)
    parser.set_defaults(func=run)
    return parser


def build(options: ServeOptions):
    """(FastAPI app, engine) with every adapter loaded and checked against the one base model."""
    import torch

    from ..model import DeptModel
    from ..serving.accounting import Metrics
    from ..serving.app import Limits, create_app
    from ..serving.engine import Engine
    from ..trained import read_trained

    named = {name: read_trained(path) for name, path in options.named_adapters().items()}  # each read once
    base = options.model_name_or_path
    if base is None:
        if not named:
            raise OptionError("give --model, or at least one --adapter / --adapters_dir to take it from")
        base = next(iter(named.values())).base_model()
    # --engine vllm: vLLM holds the model on the accelerator; dept's copy only lays out the
    # prompt embeddings, on the CPU
    cuda = torch.cuda.is_available() and options.engine == "embedded"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        options.dtype, torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32)
    model = DeptModel.from_pretrained(base, dtype=dtype, device="cuda" if cuda else None)
    metrics = Metrics()
    if options.engine == "vllm":
        engine = vllm_engine(options, model, base, metrics)
    else:
        engine = Engine(model, max_batch_size=options.max_batch_size, max_batch_wait_ms=options.max_batch_wait_ms,
                        max_queue=options.max_queue, mix_adapters=options.mix_adapters,
                        max_queue_wait=options.max_queue_wait, continuous=options.continuous_batching,
                        metrics=metrics)
    metrics.track_queue(engine.depth)
    for name, trained in named.items():
        engine.load_adapter(name, trained)  # refuses an adapter of another base model
    api_key = options.api_key or os.environ.get("DEPT_API_KEY") or None
    app = create_app(engine, base_name=Path(base).name if Path(base).is_dir() else base,
                     adapters_dir=options.adapters_dir, allow_updates=options.allow_adapter_updates, api_key=api_key,
                     limits=Limits(max_tokens=options.max_tokens, request_timeout=options.request_timeout,
                                   shutdown_timeout=options.shutdown_timeout), metrics=metrics)
    return app, engine


def vllm_engine(options: ServeOptions, model, base: str, metrics):
    """vLLM's async engine in this process, on the base model's folder; what it cannot serve
    (encoders, seq2seq) and unreadable --engine_args fail in one line before vLLM starts."""
    from ..pretrained import resolve
    from ..serving.vllm_engine import VllmServingEngine
    from ..vllm_engine import check_family, engine_args

    check_family(model)  # before --engine_args, whose error would otherwise hide this one
    settings = engine_args(options.engine_args)
    return VllmServingEngine(model, resolve(base), settings, max_queue=options.max_queue,
                             max_queue_wait=options.max_queue_wait, metrics=metrics)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..serving.shutdown import SHED_GRACE, DrainingServer

    options = options_from_args(args, ServeOptions)
    app, engine = build(options)
    log.info("serving %s and %d adapter(s) on http://%s:%d", engine.model.base_model.config._name_or_path,
             len(engine.adapters), options.host, options.port)
    # SIGTERM drains (serving/shutdown.py): uvicorn is asked to exit only once nothing is in flight,
    # so its own graceful timeout, which cancels handlers into 500s, is a backstop that never fires.
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="warning",
                            timeout_graceful_shutdown=int(SHED_GRACE) + 5)
    DrainingServer(config, app.state.service.draining).run()
    log.info("stopped; answers by status: %s", json.dumps(app.state.service.metrics.answered()))
    return 0
