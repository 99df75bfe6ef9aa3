"""Every answer counted once, in one place: a plain ASGI middleware around the whole app.

It sits outside the routes and their exception handlers, so an error raised anywhere (a handler,
a dependency, the body parser) is counted with the status the client receives, and
`dept_requests_total` equals what clients saw. It also answers, before any route runs, the
requests the server will not take: a body over the size limit (413) and, while the server drains
after SIGTERM, any new work (503 with Retry-After, so a load balancer retries elsewhere).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.responses import JSONResponse
from starlette.routing import Match

from .schemas import error_body
from .shutdown import SHUTTING_DOWN

# Endpoints still answered while draining (so metrics stay readable; /health answers 503 and a
# load balancer takes the replica out).
OPEN_WHILE_DRAINING = ("/metrics",)


class Metrics:
    """The server's Prometheus metrics, in a registry of its own."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("dept_requests", "Answers by endpoint, adapter and status",
                                ["endpoint", "adapter", "status"], registry=self.registry)
        self.latency = Histogram("dept_request_seconds", "Request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_rows = Histogram("dept_batch_rows", "Rows per batch the worker ran", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.in_flight = Gauge("dept_requests_in_flight", "Requests received and not yet answered, by endpoint",
                               ["endpoint"], registry=self.registry)
        self.queue_depth = Gauge("dept_queue_depth", "Requests waiting for the worker", registry=self.registry)

    def answered(self) -> dict[int, int]:
        """status -> answers counted so far (all endpoints but /metrics itself)."""
        counts: dict[int, int] = {}
        for sample in self.requests.collect()[0].samples:
            if sample.name.endswith("_total") and sample.labels["endpoint"] != "/metrics":
                status = int(sample.labels["status"])
                counts[status] = counts.get(status, 0) + int(sample.value)
        return dict(sorted(counts.items()))

    def track_queue(self, depth) -> "Metrics":
        """Read the queue depth from `depth()` at every scrape."""
        self.queue_depth.set_function(depth)
        return self


class Accounting:
    """ASGI middleware: count each answer by the route's path, adapter and status; refuse early."""

    def __init__(self, app, *, metrics: Metrics, max_request_bytes: int, draining):
        self.app = app
        self.metrics = metrics
        self.max_request_bytes = max_request_bytes
        self.draining = draining
        self.active = 0
        """Requests received and not yet answered (what a drain waits for)."""
        self._routes: list | None = None
        draining.accounting = self

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = self._endpoint(scope)
        status = None

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        self.active += 1
        try:
            with self.metrics.in_flight.labels(endpoint).track_inprogress():
                refusal = self._refusal(scope, endpoint)
                if refusal is not None:
                    await refusal(scope, receive, sending)
                else:
                    await self.app(scope, receive, sending)
        finally:  # an exception leaves here as the 500 the server's outermost layer sends
            self.active -= 1
            adapter = scope.get("state", {}).get("adapter", "")
            self.metrics.requests.labels(endpoint, adapter, str(status or 500)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    def _endpoint(self, scope) -> str:
        """The matching route's path ("/v1/adapters/{name}"), so labels stay few whatever is sent."""
        if self._routes is None:
            self._routes = _routes(self.app)
        for route in self._routes:
            if route.matches(scope)[0] == Match.FULL:
                return route.path
        return "other"

    def _refusal(self, scope, endpoint: str) -> JSONResponse | None:
        if self.draining.closed and endpoint not in OPEN_WHILE_DRAINING:
            return JSONResponse(error_body(SHUTTING_DOWN, "service_unavailable"), status_code=503,
                                headers={"Retry-After": str(self.draining.retry_after)})
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_request_bytes:
            return JSONResponse(error_body(f"request body over {self.max_request_bytes} bytes",
                                           "invalid_request_error"), status_code=413)
        return None


def _routes(app) -> list:
    """The routes of the innermost app that has them (middleware wraps the FastAPI app)."""
    while app is not None and not hasattr(app, "routes"):
        app = getattr(app, "app", None)
    return list(app.routes) if app is not None else []

