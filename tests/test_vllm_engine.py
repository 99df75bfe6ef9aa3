"""vLLM as a second engine (dept/vllm_engine.py). Everywhere: the prompt embeddings handed to
vLLM reproduce DeptModel's own forward, every tensor is checked before it leaves, and what vLLM
cannot do is refused in one line. Where vLLM is installed (`make install-vllm`): `dept predict
--engine vllm` gives the embedded engine's answers on the real SmolLM2."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys

import pytest
import torch
from helpers_tiny import dept_config, randomise, random_rows, tiny_base, tiny_dept, tiny_tokenizer
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import llama_dir, t5_dir  # noqa: F401
from helpers_train import predicted

from dept.cli.main import main
from dept.model import DeptModel
from dept.vllm_engine import EngineError, check_family, checked, engine_args, prompt_embeddings

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.mark.parametrize("name,m,r", [("dept", 4, 3), ("pt", 5, 0)])
def test_the_prompt_embeddings_reproduce_deptmodels_own_forward(name, m, r):
    model = DeptModel(tiny_base("causal"), None, tokenizer=tiny_tokenizer()).eval()
    model.add_adapter(name, dept_config("causal", m, r, 16, seed=1))
    randomise(model, name, seed=5)
    rows = random_rows([3, 7, 5], seed=9)
    embeds = prompt_embeddings(model, rows, name, batch_size=2, dtype=torch.float32)
    assert [tuple(e.shape) for e in embeds] == [(m + len(row), model.base_model.config.hidden_size) for row in rows]
    for row, e in zip(rows, embeds):
        with torch.no_grad():
            theirs = model.base_model(inputs_embeds=e[None]).logits[0, -1]
            ours = model(torch.tensor([row]), adapter_names=[name]).logits[0, -1]
        assert torch.allclose(theirs, ours, atol=1e-5)


def test_only_checked_tensors_leave():
    assert checked(torch.zeros(3, 8), 8).shape == (3, 8)
    for bad, message in [(torch.zeros(3, 7), "expected \\(n, 8\\)"), (torch.zeros(1, 3, 8), "shape"),
                         (torch.zeros(0, 8), "shape"), (torch.full((2, 8), float("nan")), "non-finite")]:
        with pytest.raises(EngineError, match=message):
            checked(bad, 8)


def test_engine_args_from_json_or_yaml(tmp_path):
    assert engine_args('{"tensor_parallel_size": 2, "dtype": "bfloat16"}') == {"tensor_parallel_size": 2,
                                                                              "dtype": "bfloat16"}
    (tmp_path / "vllm.yaml").write_text("max_model_len: 512\ngpu_memory_utilization: 0.5\n")
    assert engine_args(str(tmp_path / "vllm.yaml")) == {"max_model_len": 512, "gpu_memory_utilization": 0.5}
    assert engine_args(None) == {}
    with pytest.raises(EngineError, match="not a JSON object"):
        engine_args("{tensor_parallel_size: }")
    with pytest.raises(EngineError, match="cannot read it"):
        engine_args(str(tmp_path / "missing.yaml"))


def test_what_vllm_cannot_serve_is_refused():
    for family in ("seq2seq", "encoder"):
        with pytest.raises(EngineError, match="decoder-only"):
            check_family(tiny_dept(family))


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here: the refusal is for machines without it")
@pytest.mark.parametrize("command", ["predict", "eval"])
def test_without_vllm_the_command_says_how_to_install_it(command, llama_dir, tmp_path_factory, capsys, monkeypatch):
    from helpers_train import trained_run

    run = trained_run(llama_dir, tmp_path_factory)
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"sentence": "the movie was wonderful"}\n'))
    assert main([command, "--adapter", str(run), "--engine", "vllm"]) == 2
    assert "make install-vllm" in capsys.readouterr().err


SENTENCES = ["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés.",
             "an utterly charming and hilarious film.", "it's a cookie-cutter movie, a cut-and-paste job.",
             "a thoughtful, provocative, insistently humanizing film.", "the acting is stiff and the script dull.",
             "one of the best films of the year.", "a mess from start to finish."]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed here (make install-vllm)")
def test_vllm_answers_as_the_embedded_engine_on_smollm2(tmp_path, monkeypatch):
    from dept import DeptConfig

    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; the CPU build's default takes most of the memory

    torch.manual_seed(0)
    model = DeptModel.from_pretrained("smollm2-135m")
    model.add_adapter("sst2", DeptConfig(prompt_length=20, rank=8, max_length=64, prompt_init="random", seed=0,
                                         task={"task": "sst2"}))
    with torch.no_grad():
        model.dept_adapters["sst2"].lora_b.normal_(0, 0.01)
    model.save_adapter(tmp_path / "sst2", "sst2")
    args = ["--engine_args", '{"max_model_len": 256, "enforce_eager": true}']  # eager: starts in ~25 s, not ~150
    for decoder in ("generate", "rank"):
        embedded = predicted(tmp_path / "sst2", SENTENCES, "--decoder", decoder, "--max_new_tokens", 8)
        vllm = predicted(tmp_path / "sst2", SENTENCES, "--decoder", decoder, "--max_new_tokens", 8,
                         "--engine", "vllm", *args)
        assert sum(a == b for a, b in zip(embedded, vllm)) >= 0.95 * len(SENTENCES), (decoder, embedded, vllm)
    scored = {}
    for engine in ("embedded", "vllm"):
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(["eval", "--adapter", str(tmp_path / "sst2"), "--task", "demo", "--max_eval_samples", "16",
                         "--engine", engine, *args]) == 0
        scored[engine] = json.loads(out.getvalue().splitlines()[-1])
    assert scored["vllm"]["accuracy"] == scored["embedded"]["accuracy"] and scored["vllm"]["examples"] == 16


def test_dept_serve_with_vllm_refuses_what_it_cannot_serve_in_one_line(t5_dir, llama_dir):
    from helpers_train import dept_fails

    line = dept_fails("serve", "--model", t5_dir, "--engine", "vllm")
    assert "decoder-only" in line and "--engine embedded" in line
    line = dept_fails("serve", "--model", llama_dir, "--engine", "vllm", "--engine_args", "{not json")
    assert "--engine_args: not a JSON object" in line
    if not HAS_VLLM:
        assert "make install-vllm" in dept_fails("serve", "--model", llama_dir, "--engine", "vllm")
