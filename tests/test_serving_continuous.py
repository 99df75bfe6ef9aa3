"""Continuous batching in the embedded engine: a short request sent while a long generation runs
joins it between steps (or, a classification, runs between two steps) and is answered first,
with the answer it gets alone."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient
from helpers_serve import served_adapters
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import llama_dir  # noqa: F401

from dept.cli.serve_cmd import ServeOptions, build

LONG = 256


@pytest.fixture(scope="module")
def client(llama_dir, tmp_path_factory):
    adapters = served_adapters(llama_dir, tmp_path_factory)
    app, _ = build(ServeOptions(adapters_dir=str(adapters), model_name_or_path=str(llama_dir), max_batch_wait_ms=1.0))
    with TestClient(app) as c:
        yield c


def complete(client, model: str, prompt: str, tokens: int) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0}
    answer = client.post("/v1/completions", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_short_requests_sent_during_a_long_generation_finish_first(client):
    alone_short = complete(client, "two", "sentence: Not worth the ticket.", 3)["choices"][0]["text"]
    alone_label = client.post("/v1/classify", json={"model": "one", "input": "A quiet triumph."}).json()
    start = time.perf_counter()
    complete(client, "one", "sentence: A wonderful, moving film.", LONG)
    long_alone = time.perf_counter() - start
    finished: dict[str, float] = {}
    answers: dict[str, dict] = {}

    def long_one():
        answers["long"] = complete(client, "one", "sentence: A wonderful, moving film.", LONG)
        finished["long"] = time.perf_counter()

    worker = threading.Thread(target=long_one)
    worker.start()
    time.sleep(long_alone / 5)  # the long generation is decoding by now
    answers["short"] = complete(client, "two", "sentence: Not worth the ticket.", 3)
    finished["short"] = time.perf_counter()
    answers["classify"] = client.post("/v1/classify", json={"model": "one", "input": "A quiet triumph."}).json()
    finished["classify"] = time.perf_counter()
    worker.join(120)
    long_usage = answers["long"]["usage"]["completion_tokens"]
    assert long_usage == LONG, "the long request ended early: the test shows nothing"
    assert finished["short"] < finished["long"] and finished["classify"] < finished["long"], long_alone
    assert answers["short"]["choices"][0]["text"] == alone_short
    assert answers["classify"]["data"] == alone_label["data"]
