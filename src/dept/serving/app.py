"""The HTTP surface: FastAPI routes, auth, limits and Prometheus metrics over one Engine."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .adapters import RequestError
from .decode import Row
from .engine import Engine, QueueFull
from .schemas import AdapterRequest, ClassifyRequest, CompletionRequest, error_body


@dataclass
class Limits:
    max_tokens: int = 256
    """Largest max_tokens a completion may ask for."""
    request_timeout: float = 60.0
    """Seconds a request may wait and run before 504."""
    max_request_bytes: int = 1_000_000
    max_inputs: int = 64
    """Prompts or classify inputs in one request."""


class Metrics:
    def __init__(self, engine: Engine):
        self.registry = CollectorRegistry()
        self.requests = Counter("dept_requests", "Requests by endpoint, adapter and status",
                                ["endpoint", "adapter", "status"], registry=self.registry)
        self.latency = Histogram("dept_request_seconds", "Request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_rows = Histogram("dept_batch_rows", "Rows per batch the worker ran", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.in_flight = Gauge("dept_requests_in_flight", "Requests received and not yet answered, by endpoint",
                               ["endpoint"], registry=self.registry)
        depth = Gauge("dept_queue_depth", "Requests waiting for the worker", registry=self.registry)
        depth.set_function(engine.depth)


def create_app(engine: Engine, *, base_name: str, adapters_dir: str | None = None, allow_updates: bool = False,
               api_key: str | None = None, limits: Limits | None = None) -> FastAPI:
    limits = limits or Limits()
    metrics = engine.metrics = engine.metrics or Metrics(engine)

    @asynccontextmanager
    async def lifespan(app):
        if not engine._thread.is_alive():
            engine.start()
        yield
        # uvicorn has stopped accepting and answered what was in flight (SIGTERM): now the worker.
        await asyncio.to_thread(engine.stop)

    app = FastAPI(title="dept serve", lifespan=lifespan)

    def error(status: int, message: str, kind: str, param: str | None = None, headers=None) -> JSONResponse:
        return JSONResponse(error_body(message, kind, param=param), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error(422, f"{where}: {first.get('msg', 'invalid request')}", "invalid_request_error", where or None)

    @app.exception_handler(RequestError)
    async def refused(request, err: RequestError):
        kind = "not_found_error" if err.status == 404 else "invalid_request_error"
        return error(err.status, str(err), kind, err.param)

    @app.exception_handler(QueueFull)
    async def busy(request, err):
        return error(429, "the server's queue is full; retry shortly", "rate_limit_error", headers={"Retry-After": "1"})

    @app.middleware("http")
    async def size_and_metrics(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_request_bytes:
            return error(413, f"request body over {limits.max_request_bytes} bytes", "invalid_request_error")
        started = time.perf_counter()
        endpoint = request.url.path
        with metrics.in_flight.labels(endpoint).track_inprogress():
            response = await call_next(request)
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        metrics.requests.labels(endpoint, getattr(request.state, "adapter", ""), str(response.status_code)).inc()
        return response

    async def authorised(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise RequestError("missing or wrong API key (Authorization: Bearer ...)", status=401)

    def served(name: str, request: Request):
        request.state.adapter = name
        if name == base_name:
            return None
        if name not in engine.adapters:
            raise RequestError(f"no model or adapter named {name!r}; served: {[base_name, *engine.adapters]}",
                               status=404, param="model")
        return engine.adapters[name]

    async def answer(work, request: Request):
        """The work's result; 504 past the timeout; dropped if the client goes away."""
        future = asyncio.wrap_future(engine.submit(work))
        deadline = time.perf_counter() + limits.request_timeout
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected() or time.perf_counter() > deadline:
                    work.future.cancel()
                    if time.perf_counter() > deadline:
                        raise RequestError(f"the request took over {limits.request_timeout:g} s",
                                           status=504) from None
                    raise RequestError("client disconnected", status=499) from None

    # ----- endpoints ---------------------------------------------------------------------
    @app.get("/health")
    async def health():
        return {"status": "ok", "adapters": len(engine.adapters), "queue_depth": engine.depth()}

    @app.get("/metrics", dependencies=[Depends(authorised)])
    async def prometheus():
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models():
        base = {"id": base_name, "object": "model", "created": 0, "owned_by": "dept", "task": None}
        listed = [{"id": s.name, "object": "model", "created": 0, "owned_by": "dept", "root": base_name,
                   "task": s.meta.task, "prompt_length": s.prompt_length, "rank": s.rank, "path": s.path}
                  for s in engine.adapters.values()]
        return {"object": "list", "data": [base, *listed]}

    @app.post("/v1/classify", dependencies=[Depends(authorised)])
    async def classify(body: ClassifyRequest, request: Request):
        adapter = served(body.model, request)
        if adapter is None:
            raise RequestError("classification needs an adapter (its task's labels); name one in 'model'",
                               param="model")
        inputs = body.inputs()
        if not inputs or len(inputs) > limits.max_inputs:
            raise RequestError(f"'input' must hold 1 to {limits.max_inputs} items", param="input")
        sources = [adapter.source(item, f"input[{i}]") for i, item in enumerate(inputs)]
        truncated = [adapter.check_length(s, f"input[{i}]") for i, s in enumerate(sources)]
        results = await answer(engine.classify(adapter, sources), request)
        return {"object": "classification", "model": body.model, "task": adapter.meta.task,
                "data": [{"index": i, **r, "truncated": t} for i, (r, t) in enumerate(zip(results, truncated))]}

    @app.post("/v1/completions", dependencies=[Depends(authorised)])
    async def completions(body: CompletionRequest, request: Request):
        adapter = served(body.model, request)
        if not engine.model.family.generates:
            raise RequestError(f"a {engine.model.family.name} model classifies; use /v1/classify", param="model")
        if body.max_tokens > limits.max_tokens:
            raise RequestError(f"max_tokens {body.max_tokens} is over this server's cap of {limits.max_tokens}",
                               param="max_tokens")
        prompts = body.prompts()
        if not prompts or len(prompts) > limits.max_inputs:
            raise RequestError(f"'prompt' must hold 1 to {limits.max_inputs} strings", param="prompt")
        truncated = [adapter.check_length(p, f"prompt[{i}]") if adapter else False for i, p in enumerate(prompts)]
        tokenizer = engine.model.tokenizer
        ids = [adapter.collator.source_ids(p) if adapter else tokenizer(p)["input_ids"] for p in prompts]
        if any(not i for i in ids):
            raise RequestError("an empty prompt", param="prompt")
        stream = asyncio.Queue() if body.stream else None
        loop = asyncio.get_running_loop()
        rows = []
        for index, source_ids in enumerate(ids):
            generator = None
            if body.temperature > 0:
                generator = torch.Generator().manual_seed(body.seed + index if body.seed is not None
                                                          else secrets.randbits(62))
            on_text = (lambda piece, index=index: loop.call_soon_threadsafe(stream.put_nowait, (index, piece, None))) \
                if stream is not None else None
            rows.append(Row(source_ids, adapter.name if adapter else None, body.max_tokens, body.temperature,
                            body.top_p, body.stops(), generator, on_text))
        work = engine.generate(rows)
        completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        prompt_tokens = sum(len(i) for i in ids)

        def usage(done_rows) -> dict:
            completion = sum(len(r.tokens) for r in done_rows)
            return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                    "total_tokens": prompt_tokens + completion}

        if stream is None:
            done = await answer(work, request)
            return {"id": completion_id, "object": "text_completion", "created": created, "model": body.model,
                    "choices": [{"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
                                for i, r in enumerate(done)],
                    "usage": usage(done), "dept": {"truncated": truncated}}

        future = asyncio.wrap_future(engine.submit(work))

        def chunk(index: int, text: str, finish) -> str:
            return "data: " + json.dumps({"id": completion_id, "object": "text_completion", "created": created,
                                          "model": body.model, "choices": [{"index": index, "text": text,
                                                                            "logprobs": None,
                                                                            "finish_reason": finish}]}) + "\n\n"

        async def events():
            try:
                while not (future.done() and stream.empty()):
                    try:
                        index, piece, _ = await asyncio.wait_for(stream.get(), timeout=0.1)
                    except asyncio.TimeoutError:
                        continue
                    yield chunk(index, piece, None)
                for index, row in enumerate(await future):
                    yield chunk(index, "", row.finish_reason)
                yield "data: [DONE]\n\n"
            finally:
                work.future.cancel()  # a client that left: its rows leave the batch

        return StreamingResponse(events(), media_type="text/event-stream")

    # ----- adapter management ----------------------------------------------------------
    def updatable() -> Path:
        if not allow_updates or adapters_dir is None:
            raise RequestError("adapter updates are off (start with --allow_adapter_updates and --adapters_dir)",
                               status=403)
        return Path(adapters_dir).resolve()

    @app.post("/v1/adapters", dependencies=[Depends(authorised)])
    async def add_adapter(body: AdapterRequest):
        root = updatable()
        path = (root / body.path).resolve()
        if root != path and root not in path.parents:
            raise RequestError(f"path {body.path!r} is outside the adapters folder", status=403, param="path")
        try:
            adapter = await asyncio.to_thread(engine.load_adapter, body.name, str(path))
        except RequestError:
            raise
        except Exception as err:  # a bad folder: the adapter files' own message
            raise RequestError(str(err), param="path") from None
        return {"id": adapter.name, "object": "model", "task": adapter.meta.task}

    @app.delete("/v1/adapters/{name}", dependencies=[Depends(authorised)])
    async def delete_adapter(name: str):
        updatable()
        await asyncio.to_thread(engine.delete_adapter, name)
        return {"id": name, "object": "model", "deleted": True}

    return app
