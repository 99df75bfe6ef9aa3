"""Load shedding by expected wait (serving/admission.py): pure, queued rows and tokens times the
measured service time against max_wait, and the Retry-After it answers with; then the real
engine and route, with the worker held so that the queue fills."""

from __future__ import annotations

from dataclasses import dataclass, field

import threading

import pytest
from fastapi.testclient import TestClient
from helpers_serve import served_adapters
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import llama_dir  # noqa: F401

from dept.cli.serve_cmd import ServeOptions, build
from dept.serving.admission import WaitEstimate
from dept.serving.policy import Kind
from dept.serving.work import QueueFull, Work


@dataclass
class Gen:
    max_tokens: int


@dataclass
class Req:
    kind: Kind
    rows: list = field(default_factory=lambda: [None])


def test_nothing_is_refused_before_a_service_time_is_known():
    estimate = WaitEstimate(max_wait=1.0)
    assert estimate.refusal([Req(Kind.CLASSIFY, [None] * 1000)]) is None


def test_queued_rows_times_the_measured_time_against_max_wait():
    estimate = WaitEstimate(max_wait=2.0)
    estimate.observe(Kind.CLASSIFY, seconds=1.0, units=10)              # 0.1 s a row
    assert estimate.wait([Req(Kind.CLASSIFY, [None] * 15)]) == pytest.approx(1.5)
    assert estimate.refusal([Req(Kind.CLASSIFY, [None] * 20)]) is None  # exactly 2 s: admitted
    assert estimate.refusal([Req(Kind.CLASSIFY, [None] * 45)]) == 3     # 4.5 s: retry once 2.5 s have passed


def test_generations_cost_their_max_tokens_at_the_measured_token_time():
    estimate = WaitEstimate(max_wait=1.0)
    estimate.observe(Kind.GENERATE, seconds=0.5, units=100)             # 5 ms a token
    queued = [Req(Kind.GENERATE, [Gen(100), Gen(200)]), Req(Kind.CLASSIFY), Req(Kind.CONTROL, [])]
    assert estimate.wait(queued) == pytest.approx(1.5)                  # the classify's time is not known yet
    assert estimate.refusal(queued) == 1


def test_with_continuous_batching_a_request_waits_for_its_own_kind_only():
    estimate = WaitEstimate(max_wait=1.0)
    estimate.observe(Kind.GENERATE, seconds=1.0, units=100)             # 10 ms a token
    estimate.observe(Kind.CLASSIFY, seconds=0.1, units=10)              # 10 ms a row
    queued = [Req(Kind.GENERATE, [Gen(200)]), Req(Kind.CLASSIFY, [None] * 5)]
    assert estimate.refusal(queued) == 2                                 # 2.05 s of everything
    assert estimate.refusal(queued, Kind.CLASSIFY) is None               # 0.05 s of classifications
    assert estimate.refusal(queued, Kind.GENERATE) == 1                  # 2 s of generations


def test_the_service_time_moves_with_the_batches_run():
    estimate = WaitEstimate(max_wait=1.0)
    estimate.observe(Kind.CLASSIFY, 1.0, 10)
    estimate.observe(Kind.CLASSIFY, 3.0, 10)
    assert 0.1 < estimate.per_unit[Kind.CLASSIFY] < 0.3
    estimate.observe(Kind.CLASSIFY, 1.0, 0)                              # nothing ran: ignored
    assert 0.1 < estimate.per_unit[Kind.CLASSIFY] < 0.3


def test_zero_turns_it_off():
    estimate = WaitEstimate(max_wait=0.0)
    estimate.observe(Kind.CLASSIFY, 10.0, 1)
    assert estimate.refusal([Req(Kind.CLASSIFY, [None] * 100)]) is None


def test_the_server_refuses_by_expected_wait_before_the_count_bound(llama_dir, tmp_path_factory):
    adapters = served_adapters(llama_dir, tmp_path_factory, names=("one",))
    app, engine = build(ServeOptions(adapters_dir=str(adapters), model_name_or_path=str(llama_dir),
                                     max_queue=500, max_queue_wait=0.05))
    body = {"model": "one", "input": "A quiet triumph."}
    with TestClient(app) as client:
        for _ in range(3):  # measured service time of this machine
            assert client.post("/v1/classify", json=body).status_code == 200
        per_row = engine.admission.per_unit[Kind.CLASSIFY]
        release = threading.Event()
        engine.submit(Work(Kind.CONTROL, [], action=lambda: release.wait(60)))  # the worker is held
        admitted = []
        try:
            while True:
                admitted.append(engine.submit(engine.classify(engine.adapters["one"], ["A quiet triumph."])))
                assert len(admitted) < 500
        except QueueFull as refused:
            retry = refused.retry_after
        answer = client.post("/v1/classify", json=body)
        release.set()
        results = [future.result(60) for future in admitted]
    assert len(admitted) == pytest.approx(0.05 / per_row, abs=2)  # refused by wait, far below the count
    assert retry >= 1 and answer.status_code == 429 and int(answer.headers["Retry-After"]) >= 1
    assert "at capacity" in answer.json()["error"]["message"]
    assert all(r[0]["label"] for r in results)


def test_generations_that_fit_the_running_decode_wait_for_nobody(llama_dir, tmp_path_factory):
    """Continuous batching: a queued generation that fits the running decode's free rows joins it
    at the next step, so only those past the free rows are costed for a new generation."""
    adapters = served_adapters(llama_dir, tmp_path_factory, names=("one",))
    _, engine = build(ServeOptions(adapters_dir=str(adapters), model_name_or_path=str(llama_dir),
                                   max_batch_size=4, max_queue_wait=0.5))
    engine.admission.per_unit[Kind.GENERATE] = 0.1  # seconds per token
    gen = [Work(Kind.GENERATE, [Gen(8)]) for _ in range(3)]
    classify = Work(Kind.CLASSIFY, [None])
    engine._decoding = 2  # two rows decoding: two free
    assert engine._past_free_rows([gen[0], classify, gen[1], gen[2]]) == [classify, gen[2]]
    for work in gen:
        engine.queue.put_nowait(work)
    with pytest.raises(QueueFull):  # one queued generation past the free rows: 0.8 s > 0.5
        engine.submit(Work(Kind.GENERATE, [Gen(8)]))
    engine._decoding = 1
    assert engine.submit(Work(Kind.GENERATE, [Gen(8)]))  # all three fit: nothing to wait for
