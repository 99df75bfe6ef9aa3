"""A unit of the engine's work and how it is answered: the rows a request brings, its future,
and the exceptions the routes turn into 429 and 503. Shared by the worker and the routes."""

from __future__ import annotations

import logging
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from ..decoding import AdapterRef
from .adapters import RequestError, Served
from .policy import Kind

log = logging.getLogger("dept")


class QueueFull(Exception):
    """The queue is full, by count or by expected wait: answer 429 with Retry-After."""

    def __init__(self, retry_after: int = 1):
        super().__init__(retry_after)
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The server drains after SIGTERM: answer 503 with Retry-After."""


@dataclass(frozen=True)
class ClassifyRow:
    served: Served
    source_ids: list[int]

    @property
    def adapter(self) -> AdapterRef:
        return self.served.ref


@dataclass
class Work:
    kind: Kind
    rows: list[Any]                   # ClassifyRow or decoding.Row, as the kind says
    future: Future = field(default_factory=Future)
    done: list[Any] = field(default_factory=list)
    remaining: int = 0
    action: Any = None                # control: a function run on the worker thread

    def __post_init__(self) -> None:
        self.kind = Kind(self.kind)
        self.remaining = len(self.rows)
        self.done = [None] * len(self.rows)

    def adapter_names(self) -> set[str]:
        """The adapters its rows name (the base model alone names none)."""
        return {row.adapter.name for row in self.rows if row.adapter is not None}

    def adapter_refs(self) -> set[AdapterRef]:
        return {row.adapter for row in self.rows if row.adapter is not None}


def finish_row(work: Work, index: int, result) -> None:
    work.done[index] = result
    work.remaining -= 1
    if work.remaining == 0 and not work.future.done():
        try:
            work.future.set_result(work.done)
        except InvalidStateError:  # cancelled in between: its client left
            pass


def fail(work: Work, error: BaseException) -> None:
    """Answer the work with `error`, unless it is answered or cancelled (its client left) already."""
    try:
        work.future.set_exception(error)
    except InvalidStateError:
        pass


def raise_into(work: Work) -> None:
    import sys

    error = sys.exc_info()[1]
    log.error("request failed: %s", error, exc_info=not isinstance(error, RequestError))
    fail(work, error)
