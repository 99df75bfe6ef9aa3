"""Load shedding by expected wait, pure (no threads, no model).

A queue bounded by count admits work it cannot finish in reasonable time: at twice the server's
saturation, admitted requests waited 6 s, then 23 s, then 41-47 s. Here a request is refused (429)
when the work already queued would take longer than `max_wait` seconds to run, at the service
times measured on this server:

    expected wait = Σ queued classification rows × seconds per classified row
                  + Σ queued generation rows' max_tokens × seconds per generated token

With continuous batching (decoder-only models) a classification runs between two decoding
steps and a generation joins the running decode, so a request waits only for the queued work of
its own kind, and only that is counted for it.

Service times are throughputs (a batch's seconds over its rows or tokens), so batching is
accounted for, and move as an exponential average of the batches run. Before the first batch of a
kind nothing is known and nothing is refused on its account; the count bound (`--max_queue`)
still holds. Generation is costed at each row's `max_tokens`, an upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from .policy import Kind, Queued

SMOOTHING = 0.2
"""Weight of the newest batch in the moving service time."""


@dataclass
class WaitEstimate:
    max_wait: float
    """Seconds of queued work beyond which new work is refused; 0 refuses nothing."""
    per_unit: dict[Kind, float] = field(default_factory=dict)
    """Seconds per classified row / per generated token, as measured."""

    def observe(self, kind: Kind, seconds: float, units: int) -> None:
        """A batch of `kind` ran `units` rows (classify) or tokens (generate) in `seconds`."""
        if units <= 0 or seconds < 0:
            return
        sample = seconds / units
        old = self.per_unit.get(kind)
        self.per_unit[kind] = sample if old is None else (1 - SMOOTHING) * old + SMOOTHING * sample

    def cost(self, work: Queued) -> float:
        """Seconds `work` is expected to take once it runs."""
        rate = self.per_unit.get(work.kind)
        if rate is None:
            return 0.0
        return rate * sum(units(work.kind, row) for row in work.rows)

    def wait(self, queued: Iterable[Queued], kind: Kind | None = None) -> float:
        """Seconds until the worker reaches a request queued behind `queued`; with `kind`, only
        queued work of that kind is waited for (continuous batching: a classification runs
        between two decoding steps, not after the queued generations)."""
        return sum(self.cost(work) for work in queued
                   if work.kind is not Kind.CONTROL and (kind is None or work.kind is kind))

    def refusal(self, queued: Iterable[Queued], kind: Kind | None = None) -> int | None:
        """None to admit; else the Retry-After seconds: until the queue is short enough again."""
        if self.max_wait <= 0:
            return None
        expected = self.wait(queued, kind)
        if expected <= self.max_wait:
            return None
        return max(1, math.ceil(expected - self.max_wait))


def units(kind: Kind, row) -> int:
    """What a row costs in the unit its kind is measured in."""
    return row.max_tokens if kind is Kind.GENERATE else 1
