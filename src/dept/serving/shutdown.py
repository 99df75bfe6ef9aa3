"""SIGTERM as an operator expects it: stop admitting, finish what runs, shed the rest, exit 0.

    first SIGTERM (or Ctrl-C)   new requests get 503 + Retry-After (a load balancer retries elsewhere)
    until idle or the timeout   queued and running work goes on and is answered as usual
    at the timeout              what is left is answered 503 + Retry-After, never cancelled into a 500
    then                        uvicorn closes its sockets, the worker stops, the process exits 0
    a second signal             uvicorn's own immediate exit

uvicorn's own handling waits `timeout_graceful_shutdown` and then cancels the handlers still
running, which clients saw as 500s; here the server only asks uvicorn to exit once nothing is
left in flight (or a short grace after shedding has passed).
"""

from __future__ import annotations

import logging
import time

import uvicorn

log = logging.getLogger("dept")

SHUTTING_DOWN = "the server is shutting down; retry on another replica"
"""What every request refused or shed by the drain is told (503, with Retry-After)."""
# After shedding, how long answers may take to leave before uvicorn is told to exit anyway.
SHED_GRACE = 5.0


class Draining:
    """The drain's state: shared by the accounting middleware (which refuses new requests once
    `closed`) and the server (which asks `finished()` on every tick)."""

    def __init__(self, engine, timeout: float):
        self.engine = engine
        self.timeout = timeout
        self.closed = False
        self.started_at: float | None = None
        self.shed_at: float | None = None
        self.accounting = None
        """The Accounting middleware, whose count of open requests says when nothing is in flight."""

    @property
    def retry_after(self) -> int:
        return max(1, round(self.timeout))

    def start(self) -> None:
        self.closed, self.started_at = True, time.monotonic()
        self.engine.close()
        log.info("draining: no new requests; %g s for the %d in flight", self.timeout, self._in_flight())

    def finished(self) -> bool:
        """True once uvicorn may exit: nothing in flight, or the shed answers had their grace."""
        now = time.monotonic()
        if self._in_flight() == 0 and self.engine.idle():
            return True
        if self.shed_at is None and now - self.started_at >= self.timeout:
            self.shed_at = now
            log.info("draining: %g s passed; %d request(s) answered 503", self.timeout, self._in_flight())
            self.engine.shed()
        return self.shed_at is not None and (self._in_flight() == 0 or now - self.shed_at >= SHED_GRACE)

    def _in_flight(self) -> int:
        return self.accounting.active if self.accounting is not None else 0


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose first SIGTERM or SIGINT drains (see the module's doc)."""

    def __init__(self, config: uvicorn.Config, draining: Draining):
        super().__init__(config)
        self.draining = draining
        self.signalled = False

    def handle_exit(self, sig, frame) -> None:
        if self.signalled:  # a second signal: exit now, as uvicorn does
            super().handle_exit(sig, frame)
            return
        # Not recorded as uvicorn's captured signal, which it would raise again on the way out
        # (exit status -15); a drained server has done what was asked and exits 0.
        self.signalled = True

    async def on_tick(self, counter: int) -> bool:
        if self.signalled and not self.draining.closed:
            self.draining.start()
        if self.draining.closed and self.draining.finished():
            return True
        return await super().on_tick(counter)
