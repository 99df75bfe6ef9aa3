"""What every route of the server shares: one `Service` value (the engine, limits, metrics, the
drain, who may update adapters) and the dependencies that reach it and check the API key."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from fastapi import Depends, Request

from .accounting import Metrics
from .adapters import RequestError, Served
from .interface import ServingEngine
from .shutdown import Draining


@dataclass
class Limits:
    max_tokens: int = 256
    """Largest max_tokens a completion may ask for."""
    request_timeout: float = 60.0
    """Seconds a request may wait and run before 504."""
    max_request_bytes: int = 1_000_000
    max_inputs: int = 64
    """Prompts or classify inputs in one request."""
    shutdown_timeout: float = 30.0
    """Seconds after SIGTERM for the work in flight; what is left is answered 503."""


@dataclass
class Service:
    """What every route may use."""

    engine: ServingEngine
    base_name: str
    limits: Limits
    metrics: Metrics
    draining: Draining
    adapters_dir: str | None = None
    allow_updates: bool = False
    api_key: str | None = None

    def adapter(self, name: str, request: Request) -> Served | None:
        """The adapter `model` names (None: the base model alone); 404 for any other name."""
        request.state.adapter = name
        if name == self.base_name:
            return None
        if name not in self.engine.adapters:
            raise RequestError(f"no model or adapter named {name!r}; served: {[self.base_name, *self.engine.adapters]}",
                               status=404, param="model")
        return self.engine.adapters[name]

    async def answer(self, work, request: Request):
        """The work's result; 504 past the timeout; dropped if the client goes away."""
        future = asyncio.wrap_future(self.engine.submit(work))
        deadline = time.perf_counter() + self.limits.request_timeout
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected() or time.perf_counter() > deadline:
                    work.future.cancel()
                    if time.perf_counter() > deadline:
                        raise RequestError(f"the request took over {self.limits.request_timeout:g} s",
                                           status=504) from None
                    raise RequestError("client disconnected", status=499) from None


def service(request: Request) -> Service:
    return request.app.state.service


async def authorised(request: Request, svc: Service = Depends(service)) -> None:
    if svc.api_key is None:
        return
    given = request.headers.get("authorization", "")
    if not secrets.compare_digest(given.encode(), f"Bearer {svc.api_key}".encode()):
        raise RequestError("missing or wrong API key (Authorization: Bearer ...)", status=401)
