"""`dept serve` never answers 5xx for a client's input or an operator's action, and /metrics counts
every answer the clients saw: hand-made malformed requests, a property-based fuzzer over
/openapi.json, deleting an adapter under load, and SIGTERM with a deep queue. All on the real
server process on 127.0.0.1; every load loop is bounded in requests and seconds."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers_serve import running_server, served_adapters, served_in_flight, served_statuses
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import llama_dir  # noqa: F401

SENTENCE = {"sentence": "A quiet triumph."}


@pytest.fixture(scope="module")
def adapters(llama_dir, tmp_path_factory):
    return served_adapters(llama_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def server(adapters, llama_dir):
    with running_server("--adapters_dir", adapters, "--model", llama_dir, "--max_tokens", 8) as running:
        yield running


def complete(**fields) -> dict:
    return {"model": "one", "prompt": "sentence: a film", "max_tokens": 2, **fields}


# (endpoint, body, status, the field the error names)
MALFORMED = [
    ("/v1/completions", complete(temperature=1e-300), 422, "temperature"),
    ("/v1/completions", complete(seed=2**64, temperature=1), 422, "seed"),
    ("/v1/completions", complete(seed=-(2**63) - 1), 422, "seed"),
    ("/v1/completions", complete(max_tokens="16"), 422, "max_tokens"),
    ("/v1/completions", complete(max_tokens=True), 422, "max_tokens"),
    ("/v1/completions", complete(temperature="1"), 422, "temperature"),
    ("/v1/completions", complete(top_p=0), 422, "top_p"),
    ("/v1/completions", complete(prompt=[]), 422, "prompt"),
    ("/v1/completions", complete(prompt=[1, 2]), 422, "prompt"),
    ("/v1/completions", complete(stream="yes"), 422, "stream"),
    ("/v1/completions", complete(top_k=5), 422, "top_k"),
    ("/v1/completions", complete(echo=True), 400, "echo"),
    ("/v1/completions", complete(logprobs=2), 400, "logprobs"),
    ("/v1/completions", complete(best_of=2), 400, "best_of"),
    ("/v1/completions", complete(n=2), 400, "n"),
    ("/v1/completions", complete(n=0), 422, "n"),
    ("/v1/completions", complete(suffix="!"), 400, "suffix"),
    ("/v1/completions", complete(logit_bias={"50": 5}), 400, "logit_bias"),
    ("/v1/completions", complete(presence_penalty=1.0), 400, "presence_penalty"),
    ("/v1/classify", {"model": "one", "input": []}, 400, "input"),
    ("/v1/classify", {"model": "one", "input": {"sentence": None}}, 400, "input"),
    ("/v1/classify", {"model": "one", "input": {"sentence": {"nested": 1}}}, 400, "input"),
    ("/v1/classify", {"model": "one", "input": [[1]]}, 422, "input"),
    ("/v1/classify", {"model": 7, "input": "x"}, 422, "model"),
]


def test_malformed_fields_are_4xx_naming_the_field_and_counted(server):
    _, url = server
    before = served_statuses(url)
    seen = Counter()
    for endpoint, body, status, field in MALFORMED:
        answer = httpx.post(f"{url}{endpoint}", json=body, timeout=30)
        seen[answer.status_code] += 1
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["error"]["param"].startswith(field), (body, answer.text)
    # the extremes OpenAI allows are answered, not refused or crashed on
    for body in (complete(top_p=1e-300, temperature=1, seed=1), complete(temperature=0.01, seed=2**64 - 1),
                 complete(seed=-(2**63), temperature=2), complete(user="someone", logprobs=None, echo=False, n=1)):
        answer = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
        seen[answer.status_code] += 1
        assert answer.status_code == 200, (body, answer.text)
    assert served_statuses(url) - before == seen


def test_a_fuzzer_over_the_openapi_schema_finds_no_5xx(server, llama_dir):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    _, url = server
    reference = httpx.post(f"{url}/v1/classify", json={"model": "two", "input": SENTENCE}, timeout=30).json()
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    # Most random model names are a plain 404; aim most cases at what is served, so the fuzzer
    # reaches the engine with valid and invalid fields alike.
    models = st.sampled_from(["one", "two", llama_dir.name, None])
    before = served_statuses(url)
    started, statuses = time.time(), Counter()
    for operation in schema.get_all_operations():
        operation = operation.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode), model=models)
            @settings(max_examples=40, deadline=None, phases=[Phase.generate], database=None,
                      suppress_health_check=list(HealthCheck))
            def fuzz(case, model):
                if time.time() - started > 240:  # bounded in seconds as well as in cases
                    return
                if model is not None and isinstance(case.body, dict) and "model" in case.body:
                    case.body["model"] = model
                response = case.call(base_url=url, timeout=60)
                if case.path != "/metrics":  # the server's tally leaves its own scrapes out
                    statuses[response.status_code] += 1
                assert response.status_code < 500, (case.method, case.path, case.body, response.text)

            try:
                fuzz()
            except Unsatisfiable:  # an operation without inputs has no invalid form to send
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert statuses[200] >= 10 and sum(statuses.values()) >= 100, statuses
    assert served_statuses(url) - before == statuses
    after = httpx.post(f"{url}/v1/classify", json={"model": "two", "input": SENTENCE}, timeout=30).json()
    assert after["data"][0]["label"] == reference["data"][0]["label"]  # still correct afterwards
    assert after["data"][0]["scores"] == pytest.approx(reference["data"][0]["scores"], abs=1e-5)


def _hammer(url: str, endpoint: str, body: dict, seconds: float, deleting) -> Counter:
    """Clients sending `body` until `seconds` pass (at most 400 requests), while `deleting()` runs."""
    stop = time.time() + seconds

    def client(i: int) -> list[int]:
        codes = []
        while time.time() < stop and len(codes) < 50:
            codes.append(httpx.post(f"{url}{endpoint}", json=body, timeout=60).status_code)
        return codes

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, i) for i in range(8)]
        time.sleep(seconds / 3)
        deleting()
        return Counter(code for f in futures for code in f.result())


@pytest.mark.parametrize("endpoint, body", [
    ("/v1/classify", {"model": "gone", "input": [SENTENCE] * 4}),
    ("/v1/completions", {"model": "gone", "prompt": ["sentence: a film"] * 2, "max_tokens": 4, "temperature": 0}),
])
def test_deleting_an_adapter_under_load_answers_200_or_404(adapters, llama_dir, tmp_path, endpoint, body):
    import shutil

    folder = tmp_path / "adapters"
    shutil.copytree(adapters, folder)
    shutil.copytree(adapters / "one", folder / "gone")
    with running_server("--adapters_dir", folder, "--model", llama_dir, "--allow_adapter_updates") as (_, url):
        deleted = []
        tally = _hammer(url, endpoint, body, 6.0,
                        lambda: deleted.append(httpx.delete(f"{url}/v1/adapters/gone", timeout=60).status_code))
        assert deleted == [200]
        print(f"{endpoint} under delete: {dict(tally)}")  # shown with -s
        assert set(tally) <= {200, 404} and tally[200] > 0 and tally[404] > 0, tally
        gone = httpx.post(f"{url}{endpoint}", json=body, timeout=30)
        assert gone.status_code == 404 and "gone" in gone.json()["error"]["message"]
        tally[404] += 1
        counted = served_statuses(url, endpoint)
        assert counted == tally, (counted, tally)


def test_sigterm_with_a_deep_queue_answers_200_or_503_and_exits_0(adapters, llama_dir):
    # small batches of long answers, so that 2 s cannot finish them all: some are shed with 503;
    # a deep queue, so shedding by expected wait off (the generation rate is known from the first step)
    with running_server("--adapters_dir", adapters, "--model", llama_dir, "--shutdown_timeout", 2,
                        "--max_batch_size", 4, "--max_queue", 1000, "--max_queue_wait", 0) as (process, url):
        body = {"model": "one", "prompt": "sentence: a film", "max_tokens": 64, "temperature": 1, "seed": 3}
        with ThreadPoolExecutor(160) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v1/completions", json=body, timeout=120) for _ in range(160)]
            deadline = time.time() + 60
            # SIGTERM once every request has reached the server (one not yet sent is refused, rightly,
            # once it stops listening)
            while time.time() < deadline and (served_in_flight(url)["/v1/completions"]
                                              + sum(served_statuses(url, "/v1/completions").values())) < 160:
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        statuses = Counter(a.status_code for a in answers)
        print(f"SIGTERM with 160 requests in flight: {dict(statuses)}")  # shown with -s
        assert set(statuses) == {200, 503}, statuses
        assert all(a.headers.get("retry-after") for a in answers if a.status_code == 503)
        assert process.wait(60) == 0
        log = process.stderr.read()
        assert "Traceback" not in log
        counted = json.loads(log.split("answers by status: ")[1].splitlines()[0])
        assert {int(k): v for k, v in counted.items()} == {**statuses, 200: statuses[200] + 1}  # + the /health probe

