"""The efficiency benchmark's core functions on a tiny T5, one repeat: structure, not speed."""

from __future__ import annotations

import multiprocessing as mp
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _common as C  # noqa: E402
import _report  # noqa: E402
import efficiency  # noqa: E402
from helpers_train import llama_dir  # noqa: E402, F401


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return C.save_t5("t5-tiny", tmp_path_factory.mktemp("models"), vocab_size=512)


def test_measure_run_covers_every_configuration(tiny, tmp_path):
    mode = efficiency.Mode(runs=[], repeats=1, inference_repeats=1, prompt_lengths=(4, 6), vanilla_length=10)
    run = efficiency.measure_run(tiny, "t5-tiny", 16, 2, mode, threads=1)
    expected = {"frozen", "frozen+4", "frozen+6", "frozen+10", "pt-10", "peft-pt-10", "dept-4", "dept-6"}
    assert set(run["configs"]) == expected
    for name, c in run["configs"].items():
        for key in ("step_s", "input_step_s", "generate_s", "rank_s"):
            assert len(c[key]) >= 1 and min(c[key]) > 0, (name, key)
        assert (len(c["rank_api_s"]) == 1) == (c["kind"] in ("pt", "dept"))
        assert c["train_peak_mb"] > 0
    # DePT trains what PT trains (the budget), within one rank's worth of rounding.
    pt = run["configs"]["pt-10"]["trainable_params"]
    assert all(pt - (16 + 32) < run["configs"][n]["trainable_params"] <= pt for n in ("dept-4", "dept-6"))

    run["summary"] = _report.summarise(run)
    rows = {r["config"]: r for r in run["summary"]["rows"]}
    assert rows["pt-10"]["step_vs_pt"] == pytest.approx(1.0)
    assert {t["target"] for t in run["summary"]["targets"]} >= {"step dept-4 / frozen+4", "step pt-10 / peft-pt-10"}
    results = {"mode": "test", "date": "today", "wall_time_s": 1.0, "runs": [run], "padding": [],
               "machine": efficiency.machine(1), "targets": run["summary"]["targets"]}
    assert "## t5-tiny, s=16" in _report.markdown(results)
    assert [p.name for p in _report.plot(results, tmp_path)] == ["efficiency_t5-tiny_test.png"]


def test_rss_child_in_a_fresh_process(tiny):
    setup = C.Setup("dept", 4, 2)
    with mp.get_context("forkserver").Pool(1, maxtasksperchild=1) as pool:
        out = pool.apply(C.rss_child, (tiny, 16, setup, 2, 1))
    assert out["rss_peak_mb"] >= 0 and out["rss_resident_mb"] > 0


def test_padding_on_real_batches(shared_data, tmp_path):
    from _padding import padding_benchmark, read_task

    try:
        tokenizer = C.load_tokenizer()
    except Exception as error:  # the packaged model is an optional install
        pytest.skip(f"SmolLM2 tokenizer unavailable: {error}")
    base, *_ = C.load_model(C.save_t5("t5-tiny", tmp_path, vocab_size=len(tokenizer)))
    out = padding_benchmark(base, tokenizer, read_task(shared_data, "SST-2", 8), batch_size=4, s=32, m=4,
                            vanilla_length=8)
    assert out["examples"] == 8
    assert out["dynamic"]["columns_per_example"] <= out["reference"]["columns_per_example"] == 32 + 4
    assert out["speedup"]["eval"] > 0 and out["speedup"]["train"] > 0


def test_prefix_cells_on_a_tiny_llama(llama_dir, shared_data, tmp_path):
    """One repeat of every shared-prefix measurement; the shared and laid-out paths must also
    agree on what they compute (a benchmark of two different computations would be void)."""
    import _prefix
    import torch

    from dept.pretrained import load_base

    base, tokenizer, _ = load_base(str(llama_dir))
    runners = _prefix.build_runners(base, tokenizer)
    cells = [_prefix.measure_cell(base, tokenizer, runners, _prefix.Cell(lengths, 2), shared_data, repeats=1,
                                  warmup=0) for lengths in ("s=128", "SST-2")]
    for cell in cells:
        assert set(cell["configs"]) == {"PT", "DePT m=40", "DePT m=60"}
        assert min(min(v) for v in (cell["floor"]["step"], cell["floor"]["rank"], cell["floor"]["generate"])) > 0
        for c in cell["configs"].values():
            assert c["shared"]["train_peak_mb"] > 0 and all(v > 0 for v in c["ratios"].values())
    assert cells[0]["tokens_per_row"] == 128 and 10 < cells[1]["tokens_per_row"] < 128
    batch = _prefix.real_batches("SST-2", 3, tokenizer, shared_data)
    runner = runners["DePT m=60"][0]
    torch.testing.assert_close(runner.rank(batch, True), runner.rank(batch, False), rtol=1e-4, atol=1e-4)
    assert torch.equal(runner.generate(batch, True), runner.generate(batch, False))
    result = {"mode": "test", "model": "tiny", "command": "c", "wall_time_s": 1.0, "machine": {"threads": 1},
              "repeats": 1, "cells": cells, "targets": _prefix.targets(cells)}
    result["profile"] = {"what": "x", "shared": _prefix.profile_step(lambda: runner.train_step(batch, True)),
                         "floor": _prefix.profile_step(lambda: runner.floor_train(batch))}
    text = _prefix.markdown(result)
    assert "## SST-2 lengths, batch 2" in text and "## Profile" in text
    assert {t["target"] for t in result["targets"]} == {
        "training step shared <= 0.45x laid-out", "evaluation (rank) with cache <= 1.15x floor",
        "training peak memory shared <= laid-out"}
