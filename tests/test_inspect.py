"""`dept inspect`: every number checked against a direct computation on a tiny Llama."""

from __future__ import annotations

import contextlib
import io
import math

import torch
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import dept_cli, dept_fails, llama_dir  # noqa: F401  (fixture)
from transformers import AutoModelForCausalLM, AutoTokenizer

from dept.cli.main import main
from dept.config import DeptConfig
from dept.model import DeptModel

TOKENS = [5, 5, 900, 42]  # prompt rows 0 and 1 copy token 5, so they share their nearest token


def _adapter(llama_dir, out, rank=2):
    base = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.float32)
    model = DeptModel(base, DeptConfig(prompt_length=4, rank=rank, max_length=12, prompt_init="random", seed=0))
    adapter = model.dept_adapters["default"]
    table = base.get_input_embeddings().weight.detach()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        adapter.prompt.copy_(table[TOKENS])
        adapter.prompt[3] = adapter.prompt[3] * 3  # token 42, three times as large
        if rank:
            adapter.lora_b.copy_(torch.randn(adapter.lora_b.shape, generator=g) * 0.01)
    model.save_adapter(out)
    return model, table


def test_inspect_reports_nearest_tokens_norms_and_the_update(llama_dir, tmp_path):
    model, table = _adapter(llama_dir, tmp_path / "a")
    adapter = model.dept_adapters["default"]
    report = dept_cli("inspect", tmp_path / "a", "--top_k", 3, "--json", "--plot", tmp_path / "p.png")

    E = table.float()
    rms = float(E.pow(2).mean().sqrt())
    assert math.isclose(report["embedding_rms"], rms, rel_tol=1e-6)
    tok = AutoTokenizer.from_pretrained(llama_dir)
    for i, row in enumerate(report["prompt"]):
        p = adapter.prompt[i].detach()
        cos = torch.nn.functional.cosine_similarity(p.unsqueeze(0), E, dim=1)           # (V,)
        want = cos.topk(3)
        assert [n["id"] for n in row["nearest"]] == want.indices.tolist()
        assert all(math.isclose(n["cosine"], c, abs_tol=1e-5) for n, c in zip(row["nearest"], want.values.tolist()))
        assert row["nearest"][0]["token"] == tok.convert_ids_to_tokens(want.indices[0].item())
        assert math.isclose(row["rms_ratio"], float(p.pow(2).mean().sqrt()) / rms, rel_tol=1e-5)
    # Copies of a token embedding are nearest to that token, at cosine 1.
    assert [r["nearest"][0]["id"] for r in report["prompt"]] == TOKENS
    assert math.isclose(report["prompt"][0]["nearest"][0]["cosine"], 1.0, abs_tol=1e-5)
    assert math.isclose(report["prompt"][3]["rms_ratio"] / (float(E[42].pow(2).mean().sqrt()) / rms), 3.0,
                        rel_tol=0.02)
    assert report["shared_nearest"]["vectors"] == 2 and report["shared_nearest"]["tokens"][0]["id"] == 5

    update = adapter.lowrank_table().detach()                                           # (s, d)
    mean_norm = float(E.norm(dim=1).mean())
    assert len(report["update"]["norms"]) == 12
    for j in (0, 5, 11):
        assert math.isclose(report["update"]["norms"][j], float(update[j].norm()), rel_tol=1e-5)
        assert math.isclose(report["update"]["share"][j], float(update[j].norm()) / mean_norm, rel_tol=1e-5)
    assert report["update"]["argmax_position"] == int(update.norm(dim=1).argmax())

    png = (tmp_path / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_inspect_text_output_and_vanilla_prompt_tuning(llama_dir, tmp_path):
    _adapter(llama_dir, tmp_path / "pt", rank=0)
    report = dept_cli("inspect", tmp_path / "pt", "--json")
    assert "update" not in report and report["rank"] == 0 and len(report["prompt"]) == 4
    assert len(report["prompt"][0]["nearest"]) == 5  # the default top_k
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["inspect", str(tmp_path / "pt"), "--top_k", "2"]) == 0
    text = out.getvalue()
    assert "2 of 4 prompt vectors share their nearest token" in text and "P[  3]" in text


def test_inspect_refuses_a_missing_folder(tmp_path):
    assert "no such adapter folder" in dept_fails("inspect", tmp_path / "nothing")
