"""The HTTP surface: small routes over one Engine, with auth, limits, errors and accounting.

Each route is decode the request -> hand rows to the engine -> shape the answer; what the routes
share is one `Service` value on the app (service.py), reached through a FastAPI dependency.
Completions, the largest route, live in completions.py.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .accounting import Accounting, Metrics
from .adapters import RequestError
from .completions import completions
from .work import QueueFull, ShuttingDown
from .interface import ServingEngine
from .schemas import AdapterRequest, ClassifyRequest, error_body
from .service import Limits, Service, authorised, service
from .shutdown import SHUTTING_DOWN, Draining


# ----- errors: every refusal in OpenAI's error shape ------------------------------------------
def error(status: int, message: str, kind: str, param: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param=param), status_code=status, headers=headers)


async def invalid(request, err: RequestValidationError):
    first = err.errors()[0] if err.errors() else {}
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    return error(422, f"{where}: {first.get('msg', 'invalid request')}", "invalid_request_error", where or None)


async def refused(request, err: RequestError):
    kind = "not_found_error" if err.status == 404 else "invalid_request_error"
    return error(err.status, str(err), kind, err.param)


async def busy(request, err: QueueFull):
    return error(429, f"the server is at capacity; retry in {err.retry_after} s", "rate_limit_error",
                 headers={"Retry-After": str(err.retry_after)})


async def shutting_down(request, err: ShuttingDown):
    retry = str(service(request).draining.retry_after)
    return error(503, SHUTTING_DOWN, "service_unavailable",
                 headers={"Retry-After": retry})


# ----- routes -----------------------------------------------------------------------------------
async def health(svc: Service = Depends(service)):
    return {"status": "ok", "adapters": len(svc.engine.adapters), "queue_depth": svc.engine.depth()}


async def prometheus(svc: Service = Depends(service)):
    return PlainTextResponse(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def models(svc: Service = Depends(service)):
    base = {"id": svc.base_name, "object": "model", "created": 0, "owned_by": "dept", "task": None}
    listed = [{"id": s.name, "object": "model", "created": 0, "owned_by": "dept", "root": svc.base_name,
               "task": s.meta.task, "prompt_length": s.prompt_length, "rank": s.rank, "path": s.path}
              for s in svc.engine.adapters.values()]
    return {"object": "list", "data": [base, *listed]}


async def classify(body: ClassifyRequest, request: Request, svc: Service = Depends(service)):
    adapter = svc.adapter(body.model, request)
    if adapter is None:
        raise RequestError("classification needs an adapter (its task's labels); name one in 'model'", param="model")
    inputs = body.inputs()
    if not inputs or len(inputs) > svc.limits.max_inputs:
        raise RequestError(f"'input' must hold 1 to {svc.limits.max_inputs} items", param="input")
    sources = [adapter.source(item, f"input[{i}]") for i, item in enumerate(inputs)]
    truncated = [adapter.check_length(s, f"input[{i}]") for i, s in enumerate(sources)]
    results = await svc.answer(svc.engine.classify(adapter, sources), request)
    return {"object": "classification", "model": body.model, "task": adapter.meta.task,
            "data": [{"index": i, **r, "truncated": t} for i, (r, t) in enumerate(zip(results, truncated))]}


def updatable(svc: Service) -> Path:
    if not svc.allow_updates or svc.adapters_dir is None:
        raise RequestError("adapter updates are off (start with --allow_adapter_updates and --adapters_dir)",
                           status=403)
    return Path(svc.adapters_dir).resolve()


async def add_adapter(body: AdapterRequest, svc: Service = Depends(service)):
    root = updatable(svc)
    path = (root / body.path).resolve()
    if root != path and root not in path.parents:
        raise RequestError(f"path {body.path!r} is outside the adapters folder", status=403, param="path")
    try:
        adapter = await asyncio.to_thread(svc.engine.load_adapter, body.name, str(path))
    except RequestError:
        raise
    except Exception as err:  # a bad folder: the adapter files' own message
        raise RequestError(str(err), param="path") from None
    return {"id": adapter.name, "object": "model", "task": adapter.meta.task}


async def delete_adapter(name: str, svc: Service = Depends(service)):
    updatable(svc)
    await asyncio.to_thread(svc.engine.delete_adapter, name)
    return {"id": name, "object": "model", "deleted": True}


def create_app(engine: ServingEngine, *, base_name: str, adapters_dir: str | None = None, allow_updates: bool = False,
               api_key: str | None = None, limits: Limits | None = None, metrics: Metrics | None = None) -> FastAPI:
    limits = limits or Limits()
    svc = Service(engine, base_name, limits, metrics or Metrics().track_queue(engine.depth),
                  Draining(engine, limits.shutdown_timeout), adapters_dir, allow_updates, api_key)

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        yield
        # uvicorn has stopped accepting and answered what was in flight (SIGTERM): now the worker.
        await asyncio.to_thread(engine.stop)

    app = FastAPI(title="dept serve", lifespan=lifespan)
    app.state.service = svc
    for kind, handler in ((RequestValidationError, invalid), (RequestError, refused), (QueueFull, busy),
                          (ShuttingDown, shutting_down)):
        app.add_exception_handler(kind, handler)
    app.add_middleware(Accounting, metrics=svc.metrics, max_request_bytes=limits.max_request_bytes,
                       draining=svc.draining)
    guarded = [Depends(authorised)]
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", prometheus, methods=["GET"], dependencies=guarded)
    app.add_api_route("/v1/models", models, methods=["GET"], dependencies=guarded)
    app.add_api_route("/v1/classify", classify, methods=["POST"], dependencies=guarded)
    app.add_api_route("/v1/completions", completions, methods=["POST"], dependencies=guarded)
    app.add_api_route("/v1/adapters", add_adapter, methods=["POST"], dependencies=guarded)
    app.add_api_route("/v1/adapters/{name}", delete_adapter, methods=["DELETE"], dependencies=guarded)
    return app
