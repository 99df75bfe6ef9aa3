"""The real `dept serve` process for the serving tests: adapters to serve, a free port, a server
started and stopped within bounds, and the server's own count of its answers (/metrics)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from helpers_train import dept_command, subprocess_env, trained_run


def served_adapters(model_dir: Path, tmp_path_factory, names=("one", "two")) -> Path:
    """A folder of demo adapters of the tiny model, one per name, each of another seed."""
    root = tmp_path_factory.mktemp("adapters")
    for seed, name in enumerate(names, start=1):
        run = trained_run(model_dir, tmp_path_factory, "--seed", seed)
        shutil.copytree(run, root / name, ignore=shutil.ignore_patterns("checkpoint*", "*.jsonl", "*.png"))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(*args, startup: float = 120):
    """(process, url) of `dept serve ARGS` on 127.0.0.1; killed on exit if still running."""
    port = free_port()
    process = subprocess.Popen([*dept_command(), "serve", "--port", str(port), *map(str, args)],
                               env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + startup
    while time.time() < deadline:  # bounded: the server is up or the test fails
        if process.poll() is not None:
            pytest.fail(f"dept serve exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"dept serve did not start within {startup} s: {process.stderr.read()}")
    try:
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def served_statuses(url: str, endpoint: str | None = None) -> Counter:
    """status -> answers the server counted (dept_requests_total), for one endpoint or all but /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: Counter = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name != "dept_requests_total" or sample.labels["endpoint"] == "/metrics":
                continue
            if endpoint is None or sample.labels["endpoint"] == endpoint:
                counts[int(sample.labels["status"])] += int(sample.value)
    return +counts



def served_in_flight(url: str) -> Counter:
    """endpoint -> requests the server holds in flight (dept_requests_in_flight)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: Counter = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == "dept_requests_in_flight":
                counts[sample.labels["endpoint"]] += int(sample.value)
    return counts
