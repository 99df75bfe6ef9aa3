"""The same serving tests for both engines (`dept serve --engine embedded | vllm`), on the real
server process: the OpenAI client, classification and greedy completions against `dept predict`,
streaming, the 4xx cases, hot load and delete, and SIGTERM with requests in flight. The vLLM
cases skip, in one line, where vLLM is not installed (`make install-vllm`).

The tiny Llama here has heads of 32 dimensions, the smallest vLLM's CPU attention takes; vLLM
starts eagerly (no compilation) with a 1 GiB KV cache, about 25 s per server."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers_serve import running_server, served_in_flight, served_statuses
from helpers_train import predicted, tiny_model_dir, trained_run

HAS_VLLM = importlib.util.find_spec("vllm") is not None
ENGINES = ["embedded", pytest.param("vllm", marks=pytest.mark.skipif(
    not HAS_VLLM, reason="vLLM is not installed here (make install-vllm)"))]
VLLM_ARGS = ["--engine_args", json.dumps({"enforce_eager": True, "max_model_len": 256})]
SENTENCES = ["A wonderful, moving film.", "Dull and far too long.", "I laughed the whole way through.",
             "Not worth the ticket.", "A quiet triumph.", "The plot made no sense."]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir("llama-vllm", tmp_path_factory)


@pytest.fixture(scope="module")
def adapters(model_dir, tmp_path_factory):
    """Two demo adapters of the tiny Llama (seeds 1 and 2) in one adapters folder."""
    root = tmp_path_factory.mktemp("adapters")
    for seed, name in enumerate(("one", "two"), start=1):
        run = trained_run(model_dir, tmp_path_factory, "--seed", seed)
        shutil.copytree(run, root / name, ignore=shutil.ignore_patterns("checkpoint*", "*.jsonl", "*.png"))
    return root


@pytest.fixture(scope="module", params=ENGINES)
def server(request, adapters, model_dir, monkeypatch_module):
    monkeypatch_module.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the CPU build's default takes most memory
    engine = ["--engine", request.param, *(VLLM_ARGS if request.param == "vllm" else [])]
    with running_server("--adapters_dir", adapters, "--model", model_dir, "--allow_adapter_updates", *engine,
                        startup=300) as (process, url):
        yield request.param, process, url


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=60)


def test_the_openai_client_works_unchanged(server):
    from openai import OpenAI

    _, _, url = server
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data][1:] == ["one", "two"]
    answer = client.completions.create(model="one", prompt="sentence: a film", max_tokens=6, temperature=0)
    assert answer.object == "text_completion" and answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens == 6 or answer.choices[0].finish_reason == "stop"
    streamed = list(client.completions.create(model="one", prompt="sentence: a film", max_tokens=6, temperature=0,
                                              stream=True))
    assert "".join(chunk.choices[0].text for chunk in streamed) == answer.choices[0].text
    assert streamed[-1].choices[0].finish_reason == answer.choices[0].finish_reason


def test_classify_gives_dept_predicts_labels(server, adapters):
    _, _, url = server
    for name in ("one", "two"):
        body = post(url, "/v1/classify", {"model": name, "input": [{"sentence": s} for s in SENTENCES]})
        assert body.status_code == 200, body.text
        assert [row["label"] for row in body.json()["data"]] == predicted(adapters / name, SENTENCES)


def test_greedy_completions_give_dept_predicts_text(server, adapters):
    """Each adapter's greedy answer, and both adapters' rows mixed in flight at once."""
    _, _, url = server
    expected = {name: predicted(adapters / name, SENTENCES, "--decoder", "generate", "--max_new_tokens", 6)
                for name in ("one", "two")}
    with ThreadPoolExecutor(8) as pool:
        asked = [(name, i, pool.submit(post, url, "/v1/completions", {
            "model": name, "prompt": f"sentence: {s}", "max_tokens": 6, "temperature": 0}))
            for i, s in enumerate(SENTENCES) for name in ("one", "two")]
        texts = {(name, i): future.result().json()["choices"][0]["text"].strip() for name, i, future in asked}
    for name, answers in expected.items():
        assert [texts[name, i] for i in range(len(SENTENCES))] == answers, name


def test_seeded_sampling_repeats_and_stop_strings_cut(server):
    _, _, url = server
    ask = {"model": "one", "prompt": "sentence: a film", "max_tokens": 6, "temperature": 1.0, "seed": 7}
    first, second = (post(url, "/v1/completions", ask).json()["choices"][0]["text"] for _ in range(2))
    assert first == second
    greedy = post(url, "/v1/completions", {**ask, "temperature": 0}).json()["choices"][0]["text"]
    stop = greedy.strip()[1]
    cut = post(url, "/v1/completions", {**ask, "temperature": 0, "stop": stop}).json()["choices"][0]
    assert cut["text"] == greedy[:greedy.index(stop)] and cut["finish_reason"] == "stop"


@pytest.mark.parametrize("path, body, status, words", [
    ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "no model or adapter named 'nope'"),
    ("/v1/classify", {"model": "nope", "input": "x"}, 404, "no model or adapter"),
    ("/v1/completions", {"model": "one"}, 422, "prompt: Field required"),
    ("/v1/completions", {"model": "one", "prompt": "x", "max_tokens": 0}, 422, "max_tokens"),
    ("/v1/completions", {"model": "one", "prompt": "x", "max_tokens": 100000}, 400, "over this server's cap"),
    ("/v1/classify", {"model": "one", "input": {"text": "wrong field"}}, 400, "missing field(s) ['sentence']"),
    ("/v1/classify", {"model": "llama-vllm", "input": "x"}, 400, "classification needs an adapter"),
    ("/v1/adapters", {"name": "x", "path": "../.."}, 403, "outside the adapters folder"),
])
def test_refusals_have_their_status_and_openai_error_shape(server, path, body, status, words):
    _, _, url = server
    response = post(url, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_hot_load_and_delete_under_traffic(server):
    _, _, url = server
    with ThreadPoolExecutor(2) as pool:
        traffic = [pool.submit(post, url, "/v1/classify", {"model": "one", "input": f"sentence: ok {i}"})
                   for i in range(12)]
        assert post(url, "/v1/adapters", {"name": "three", "path": "two"}).status_code == 200
        three = post(url, "/v1/classify", {"model": "three", "input": [{"sentence": s} for s in SENTENCES]})
        two = post(url, "/v1/classify", {"model": "two", "input": [{"sentence": s} for s in SENTENCES]})
        assert three.status_code == 200 and three.json()["data"] == two.json()["data"]  # the same files
        assert post(url, "/v1/adapters", {"name": "three", "path": "two"}).status_code == 409
        assert httpx.delete(f"{url}/v1/adapters/three", timeout=60).status_code == 200
        assert post(url, "/v1/classify", {"model": "three", "input": "sentence: ok"}).status_code == 404
        assert httpx.delete(f"{url}/v1/adapters/three", timeout=60).status_code == 404
        assert [f.result().status_code for f in traffic] == [200] * 12  # another adapter's traffic never failed


def test_sigterm_with_requests_in_flight_loses_none(server):
    """Last in this module: the server drains and exits 0."""
    _, process, url = server
    answered = sum(served_statuses(url, "/v1/completions").values())
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, url, "/v1/completions", {
            "model": "one" if i % 2 else "two", "prompt": f"sentence: film {i}", "max_tokens": 64,
            "temperature": 0}) for i in range(8)]
        # SIGTERM once all 8 have reached the server (a request not yet sent is refused, rightly,
        # once the server stops listening)
        deadline = time.time() + 60
        while time.time() < deadline and ((in_flight := served_in_flight(url)["/v1/completions"])
                                          + sum(served_statuses(url, "/v1/completions").values())) < answered + 8:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        assert in_flight >= 1, in_flight  # the signal found work under way
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * 8
    assert process.wait(60) == 0
