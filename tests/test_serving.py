"""`dept serve` through FastAPI's test client, the embedded engine: batching across adapters
against each adapter run alone, a failing request among good ones, 429 and 504, the API key, and
decoding from the prompt cache. What both engines must do alike (the OpenAI client, streaming,
seeds and stop strings, the 4xx cases, hot load, SIGTERM) is tested for each, on the real server
process, in test_serving_engines.py."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from helpers_serve import served_adapters
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import llama_dir  # noqa: F401
from helpers_train import predicted

from dept.cli.serve_cmd import ServeOptions, build
from dept.serving.app import Limits, create_app
from dept.serving.work import ClassifyRow, QueueFull, Work

SENTENCES = ["A wonderful, moving film.", "Dull and far too long.", "I laughed the whole way through.",
             "Not worth the ticket.", "A quiet triumph.", "The plot made no sense."]


@pytest.fixture(scope="module")
def adapters(llama_dir, tmp_path_factory):
    """Two demo adapters of the tiny Llama, different (seeds), in one adapters folder."""
    return served_adapters(llama_dir, tmp_path_factory)


def serve(adapters, llama_dir, **kw):
    options = ServeOptions(adapters_dir=str(adapters), model_name_or_path=str(llama_dir),
                           **{k: v for k, v in kw.items() if k in ServeOptions.model_fields})
    return build(options)


@pytest.fixture(scope="module")
def client(adapters, llama_dir):
    app, _ = serve(adapters, llama_dir, max_batch_wait_ms=20.0)
    with TestClient(app) as c:
        yield c


def test_models_lists_the_base_and_each_adapter(client, llama_dir):
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["llama", "one", "two"]
    assert data[1]["task"] == "demo" and data[1]["prompt_length"] > 0 and data[1]["rank"] >= 0
    assert client.get("/health").json()["adapters"] == 2


def test_classify_matches_dept_predict_for_each_adapter(client, adapters):
    for name in ("one", "two"):
        body = client.post("/v1/classify", json={"model": name, "input": [{"sentence": s} for s in SENTENCES]})
        assert body.status_code == 200
        labels = [row["label"] for row in body.json()["data"]]
        assert labels == predicted(adapters / name, SENTENCES)
        assert all(set(row["scores"]) == {"negative", "positive"} for row in body.json()["data"])


def test_concurrent_mixed_adapter_requests_give_each_adapters_own_answers(client):
    alone = {name: [client.post("/v1/classify", json={"model": name, "input": {"sentence": s}}).json()["data"][0]
                    for s in SENTENCES] for name in ("one", "two")}
    jobs = [(name, i) for i in range(len(SENTENCES)) for name in ("one", "two")]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: client.post("/v1/classify", json={
            "model": job[0], "input": {"sentence": SENTENCES[job[1]]}}).json()["data"][0], jobs))
    for (name, i), answer in zip(jobs, answers):
        assert answer["label"] == alone[name][i]["label"]
        for label, score in answer["scores"].items():
            assert score == pytest.approx(alone[name][i]["scores"][label], abs=1e-4)
    batches = [line for line in client.get("/metrics").text.splitlines() if line.startswith("dept_batch_rows_count")]
    assert batches and float(batches[0].split()[-1]) > 0


def test_greedy_completion_matches_dept_predict_by_generation(client, adapters):
    for name in ("one", "two"):
        expected = predicted(adapters / name, SENTENCES[:2], "--decoder", "generate", "--max_new_tokens", 5)
        for sentence, want in zip(SENTENCES[:2], expected):
            body = client.post("/v1/completions", json={"model": name, "prompt": f"sentence: {sentence}",
                                                        "max_tokens": 5, "temperature": 0}).json()
            assert body["object"] == "text_completion" and body["choices"][0]["text"].strip() == want
            assert body["usage"]["completion_tokens"] <= 5 and body["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_list_of_prompts_and_the_base_model(client):
    body = client.post("/v1/completions", json={"model": "llama", "prompt": ["hello", "the film"], "max_tokens": 3,
                                                "temperature": 0}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1] and body["usage"]["completion_tokens"] == 6


def test_adapter_updates_are_refused_unless_allowed(client):
    response = client.post("/v1/adapters", json={"name": "x", "path": "one"})
    assert response.status_code == 403 and "adapter updates are off" in response.json()["error"]["message"]


def test_malformed_json_is_422(client):
    response = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "error" in response.json()


def test_an_error_in_one_request_never_fails_its_batch_mates(adapters, llama_dir):
    app, engine = serve(adapters, llama_dir, max_batch_wait_ms=50.0)
    with TestClient(app):
        good = engine.classify(engine.adapters["one"], ["sentence: fine"])
        bad = engine.classify(engine.adapters["one"], ["sentence: fine"])
        bad.rows[0] = ClassifyRow(engine.adapters["one"], [10**9])  # an id past the vocabulary: its forward fails
        futures = [engine.submit(good), engine.submit(bad)]
        assert futures[0].result(30)[0]["label"] in ("negative", "positive")
        with pytest.raises(Exception):
            futures[1].result(30)
        again = engine.submit(engine.classify(engine.adapters["two"], ["sentence: still up"]))
        assert again.result(30)[0]["label"] in ("negative", "positive")  # the worker lives on


def test_queue_full_is_429_and_a_slow_request_is_504(adapters, llama_dir):
    app, engine = serve(adapters, llama_dir, max_queue=1)
    app2 = create_app(engine, base_name="llama", limits=Limits(request_timeout=0.5))
    client = TestClient(app2)  # no lifespan: the worker is not started, so nothing is answered
    engine.submit(Work("classify", []))
    response = client.post("/v1/classify", json={"model": "one", "input": "sentence: x"})
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    engine.queue.get_nowait()
    started = time.perf_counter()
    response = client.post("/v1/classify", json={"model": "one", "input": "sentence: x"})
    assert response.status_code == 504 and time.perf_counter() - started < 5
    with pytest.raises(QueueFull):
        engine.submit(Work("classify", []))  # the timed-out request is still queued, cancelled


def test_api_key_guards_everything_but_health(adapters, llama_dir):
    app, engine = serve(adapters, llama_dir)
    keyed = create_app(engine, base_name="llama", api_key="s3cret")
    with TestClient(keyed) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/v1/models").status_code == 401 and c.get("/metrics").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_decoding_with_the_prompt_cache_equals_the_laid_out_rows(adapters):
    """The server's own decode loop prefills from the persistent prompt cache (the shared
    prefix); it must give the tokens the laid-out rows give, for a batch mixing adapters."""
    from dept.inference import load_trained
    from dept.decoding import AdapterRef, Row, generate_rows

    model = load_trained(adapters / "one").model
    model.load_adapter(adapters / "two", "two")
    model.eval()
    tokenizer = model.tokenizer
    names = ["default", "two", "two", "default"]
    tokens = {}
    for share in (True, False):
        model.share_prefix = share
        rows = [Row(tokenizer(s)["input_ids"], AdapterRef(name, 0, ""), max_tokens=6, temperature=0.0, top_p=1.0, stops=[],
                    generator=None) for s, name in zip(SENTENCES, names)]
        assert model.uses_shared_prefix(names, 32) == share
        generate_rows(model, rows, tokenizer.pad_token_id, on_done=lambda row: None)
        tokens[share] = [row.tokens for row in rows]
    assert model.prompt_cache.hits + model.prompt_cache.misses > 0
    assert tokens[True] == tokens[False] and all(tokens[True])
