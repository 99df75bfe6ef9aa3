"""Which queued requests run together: the batching policy, pure (no threads, no model).

The engine's worker only executes what `BatchPolicy.form` returns; the rule lives here, where it
is tested with plain lists (S-LoRA's req_queue.py is the model):

    held-over work first (it was taken from the queue but did not fit the last batch)
    then what arrives within max_batch_wait of the first, up to max_batch_size rows
    a control action (loading or removing an adapter) runs alone, never inside a batch
    with mix_adapters off, only requests for the first request's adapter share a batch
    the first request that does not fit is held over to start the next batch (FIFO is kept)

and, between two steps of a running decode (`joins`): a queued generation joins the decode
while the rows fit; anything else that does not fit waits for the decode to end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class Kind(str, Enum):
    """What a unit of work is; the worker runs each kind of a batch apart."""

    CONTROL = "control"
    CLASSIFY = "classify"
    GENERATE = "generate"


class Queued(Protocol):
    kind: Kind
    rows: list

    def adapter_names(self) -> set[str]: ...


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 16
    """Rows (not requests) one batch may hold."""
    max_batch_wait: float = 0.005
    """Seconds to wait, after the first request, for more to join its batch."""
    mix_adapters: bool = True
    """False: only requests for the same adapter share a batch (a comparison point)."""
    first_wait: float = 0.05
    """Seconds an idle worker waits for a first request before it looks again."""

    def fits(self, batch: list[Queued], rows: int, work: Queued) -> bool:
        """Whether `work` may join `batch` (which holds `rows` rows)."""
        if work.kind is Kind.CONTROL or batch[0].kind is Kind.CONTROL:
            return False
        if rows + len(work.rows) > self.max_batch_size:
            return False
        return self.mix_adapters or work.adapter_names() == batch[0].adapter_names()

    def joins(self, running_rows: int, running: list[Queued], work: Queued) -> bool:
        """Whether queued `work` joins a decode under way (continuous batching) that runs
        `running_rows` rows of the works `running`: a generation that fits, for a compatible adapter."""
        if work.kind is not Kind.GENERATE or running_rows + len(work.rows) > self.max_batch_size:
            return False
        return self.mix_adapters or not running or work.adapter_names() == running[0].adapter_names()

    def form(self, held: list[Queued], take: Callable[[float], Queued | None],
             clock: Callable[[], float] = time.perf_counter) -> tuple[list[Queued], list[Queued]]:
        """(the batch to run now, the work held over for the next one). `take(timeout)` is the
        next queued request, or None when none came within `timeout` seconds."""
        if held:
            batch, held = list(held), []
        else:
            first = take(self.first_wait)
            if first is None:
                return [], []
            batch = [first]
        rows = sum(len(w.rows) for w in batch)
        deadline = clock() + self.max_batch_wait
        while rows < self.max_batch_size and batch[0].kind is not Kind.CONTROL:
            left = deadline - clock()
            if left <= 0:
                break
            work = take(left)
            if work is None:
                break
            if not self.fits(batch, rows, work):
                held.append(work)  # starts the next batch
                break
            batch.append(work)
            rows += len(work.rows)
        return batch, held
