"""The batching policy on its own: plain lists for the queue, a fake clock, no threads, no model."""

from __future__ import annotations

from dataclasses import dataclass, field

from dept.serving.policy import BatchPolicy, Kind


@dataclass
class Req:
    kind: Kind
    rows: list = field(default_factory=lambda: [None])
    adapter: str | None = "a"

    def adapter_names(self) -> set[str]:
        return {self.adapter} - {None}


class Queue:
    """`take(timeout)` over a list; each take advances the fake clock by `step` seconds."""

    def __init__(self, items, step: float = 0.001):
        self.items, self.now, self.step = list(items), 0.0, step

    def take(self, timeout: float):
        self.now += self.step
        return self.items.pop(0) if self.items and self.step <= timeout else None

    def clock(self) -> float:
        return self.now


def form(policy, held, items, step=0.001):
    q = Queue(items, step)
    batch, held = policy.form(held, q.take, q.clock)
    return batch, held, q.items


def test_a_batch_fills_up_to_max_rows_and_holds_the_first_that_does_not_fit():
    reqs = [Req(Kind.CLASSIFY, [None] * 3) for _ in range(4)]
    batch, held, left = form(BatchPolicy(max_batch_size=8, max_batch_wait=1.0), [], reqs)
    assert batch == reqs[:2] and held == [reqs[2]] and left == [reqs[3]]  # 3 + 3 = 6; a third makes 9


def test_held_work_starts_the_next_batch_before_the_queue():
    first, second = Req(Kind.CLASSIFY), Req(Kind.GENERATE)
    batch, held, left = form(BatchPolicy(max_batch_wait=1.0), [first], [second])
    assert batch == [first, second] and held == [] and left == []


def test_nothing_waits_past_the_window():
    reqs = [Req(Kind.CLASSIFY) for _ in range(3)]
    batch, held, left = form(BatchPolicy(max_batch_wait=0.0025), [], reqs, step=0.002)
    assert batch == reqs[:2] and held == [] and left == [reqs[2]]  # the third arrives after the window


def test_a_control_action_runs_alone():
    load, after = Req(Kind.CONTROL, []), Req(Kind.CLASSIFY)
    assert form(BatchPolicy(max_batch_wait=1.0), [], [load, after])[:2] == ([load], [])
    before = Req(Kind.CLASSIFY)
    assert form(BatchPolicy(max_batch_wait=1.0), [], [before, load])[:2] == ([before], [load])


def test_mixing_adapters_can_be_turned_off():
    a, b, a2 = Req(Kind.CLASSIFY, adapter="a"), Req(Kind.CLASSIFY, adapter="b"), Req(Kind.CLASSIFY, adapter="a")
    assert form(BatchPolicy(max_batch_wait=1.0), [], [a, b, a2])[0] == [a, b, a2]
    batch, held, left = form(BatchPolicy(max_batch_wait=1.0, mix_adapters=False), [], [a, b, a2])
    assert batch == [a] and held == [b] and left == [a2]  # FIFO: b starts the next batch


def test_an_idle_queue_gives_an_empty_batch():
    assert form(BatchPolicy(), [], []) == ([], [], [])


def test_a_generation_joins_a_running_decode_while_its_rows_fit():
    policy = BatchPolicy(max_batch_size=4)
    running = [Req(Kind.GENERATE, rows=[None, None])]
    assert policy.joins(2, running, Req(Kind.GENERATE, rows=[None, None]))
    assert not policy.joins(3, running, Req(Kind.GENERATE, rows=[None, None]))
    assert policy.joins(0, [], Req(Kind.GENERATE))  # a decode whose rows all finished takes new ones


def test_only_generations_join_a_decode_and_adapters_mix_only_when_allowed():
    running = [Req(Kind.GENERATE, adapter="a")]
    assert not BatchPolicy().joins(1, running, Req(Kind.CONTROL, rows=[]))
    assert not BatchPolicy().joins(1, running, Req(Kind.CLASSIFY))
    assert BatchPolicy().joins(1, running, Req(Kind.GENERATE, adapter="b"))
    assert not BatchPolicy(mix_adapters=False).joins(1, running, Req(Kind.GENERATE, adapter="b"))
    assert BatchPolicy(mix_adapters=False).joins(1, running, Req(Kind.GENERATE, adapter="a"))
