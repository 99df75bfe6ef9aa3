"""Adapter files: save -> load -> allclose, the config's fields, no pickle, and every refusal
of load_adapter raising AdapterFileError while leaving the model exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers_tiny import D, FAMILIES, VOCAB, dept_config, randomise, tiny_base, tiny_dept
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from safetensors.torch import load_file, save_file
from transformers import MistralConfig, MistralForCausalLM

import dept
from dept.adapter_io import CONFIG_NAME, WEIGHTS_NAME, AdapterFileError
from dept.model import DeptModel

REQUIRED_FIELDS = ("method", "prompt_length", "rank", "max_length", "alpha", "scaling",
                   "base_model_name_or_path", "model_type", "hidden_size", "vocab_size", "task", "dept_version")


def _inputs(family: str) -> dict:
    ids = torch.tensor([[2, 17, 42, 8, 99, 23], [2, 5, 6, 7, 0, 0]])
    kwargs = {"input_ids": ids, "attention_mask": (ids != 0).long()}
    if family == "seq2seq":
        kwargs["decoder_input_ids"] = torch.tensor([[0, 7, 9], [0, 4, 4]])
    return kwargs


@torch.no_grad()
def _logits(model: DeptModel, family: str) -> torch.Tensor:
    return model(**_inputs(family)).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_roundtrip(family, tmp_path):
    base = tiny_base(family)
    model = DeptModel(base, dept_config(family, m=3, r=2, s=16, alpha=4.0, scaling="linear")).eval()
    randomise(model)
    model.save_adapter(tmp_path / "ad", task_name="demo")
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]  # no pickle

    fresh = DeptModel(base).eval()
    loaded = fresh.load_adapter(tmp_path / "ad", "mine")
    assert fresh.adapter_names == ["mine"] and fresh.active_adapter == "mine"
    assert torch.allclose(_logits(fresh, family), _logits(model, family), atol=1e-6)
    for key, value in model.adapter_state_dict().items():
        assert torch.equal(fresh.adapter_state_dict()[key], value), key
    assert all(p.requires_grad for p in loaded.parameters())  # a loaded adapter trains on
    expected = {**model.dept_adapters["default"].config.to_dict()}
    expected["task"] = {"task_name": "demo"}
    assert loaded.config.to_dict() == expected


def test_adapter_config_fields_and_no_pickle(tmp_path):
    model = tiny_dept("causal", m=3, r=2, s=16)
    model.save_adapter(tmp_path, task_name="sst2", target_words=["negative", "positive"])
    record = json.loads((tmp_path / CONFIG_NAME).read_text())
    for name in REQUIRED_FIELDS:
        assert name in record, name
    assert record["method"] == "dept" and record["dept_version"] == dept.__version__
    assert (record["prompt_length"], record["rank"], record["max_length"]) == (3, 2, 16)
    assert (record["hidden_size"], record["vocab_size"], record["model_type"]) == (D, VOCAB, "llama")
    assert record["task"] == {"task_name": "sst2", "target_words": ["negative", "positive"]}
    tensors = load_file(str(tmp_path / WEIGHTS_NAME))  # plain safetensors
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {"prompt": (3, D), "lora_a": (16, 2),
                                                                "lora_b": (2, D)}
    assert all(v.dtype == torch.float32 for v in tensors.values())
    assert {p.suffix for p in tmp_path.rglob("*")} <= {".json", ".safetensors"}


def test_mixed_shapes_roundtrip_into_one_base(tmp_path):
    base = tiny_base("causal")
    ref = DeptModel(base).eval()
    for i, (name, m, r) in enumerate([("pt", 3, 0), ("lowrank", 0, 2), ("both", 2, 3)]):
        ref.add_adapter(name, dept_config("causal", m, r, 16, seed=i))
        randomise(ref, name, seed=i)
        ref.save_adapter(tmp_path / name, name)
    fresh = DeptModel(base).eval()
    for name in ("both", "pt", "lowrank"):
        fresh.load_adapter(tmp_path / name, name)
    names = ["pt", "lowrank"]
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    assert torch.allclose(fresh(ids, adapter_names=names).logits, ref(ids, adapter_names=names).logits, atol=1e-6)


def test_save_overwrites_cleanly(tmp_path):
    model = tiny_dept("seq2seq")
    model.save_adapter(tmp_path)
    randomise(model, seed=5)
    model.save_adapter(tmp_path)
    fresh = DeptModel(model.base_model).eval()
    fresh.load_adapter(tmp_path)
    assert torch.equal(fresh.adapter_state_dict()["lora_b"], model.adapter_state_dict()["lora_b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, WEIGHTS_NAME]


# ----- refusals ---------------------------------------------------------------------------------
def _mistral():
    config = MistralConfig(vocab_size=VOCAB, hidden_size=D, intermediate_size=2 * D, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2)
    return MistralForCausalLM(config).eval()


def _edit_json(folder: Path, **changes) -> None:
    record = json.loads((folder / CONFIG_NAME).read_text())
    record.update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(record))


def _save_from(base, folder: Path, **kw) -> Path:
    DeptModel(base, dept_config("causal", **kw)).save_adapter(folder)
    return folder


def _bad_folder(kind: str, tmp: Path) -> tuple[Path, str]:
    """An adapter folder that must be refused, and a word the error must name."""
    good = _save_from(tiny_base("causal", seed=3), tmp / "good")
    if kind == "hidden size":
        return _save_from(tiny_base("causal", d=48), tmp / kind), "hidden_size=48"
    if kind == "vocab size":
        return _save_from(tiny_base("causal", vocab=120), tmp / kind), "vocab_size=120"
    if kind == "model type":
        return _save_from(_mistral(), tmp / kind), "model_type='mistral'"
    if kind == "model family":  # same llama weights, attached as an encoder with a head
        DeptModel(tiny_base("causal"), dept_config("encoder"), family="encoder").save_adapter(tmp / kind)
        return tmp / kind, "model_family='encoder'"
    if kind == "missing config":
        (good / CONFIG_NAME).unlink()
        return good, "missing"
    if kind == "missing weights":
        (good / WEIGHTS_NAME).unlink()
        return good, "missing"
    if kind == "missing folder":
        return tmp / "nowhere", "no such adapter folder"
    if kind == "garbage weights":
        (good / WEIGHTS_NAME).write_bytes(b"\x00\xffthis is not a safetensors file" * 3)
        return good, "corrupt"
    if kind == "empty weights":
        (good / WEIGHTS_NAME).write_bytes(b"")
        return good, "corrupt"
    if kind == "corrupt json":
        (good / CONFIG_NAME).write_text('{"method": "dept", "rank": ')
        return good, "not valid JSON"
    if kind == "json not an object":
        (good / CONFIG_NAME).write_text("[1, 2]")
        return good, "JSON object"
    if kind == "unknown field":
        _edit_json(good, lora_dropout=0.1)
        return good, "lora_dropout"
    if kind == "other method":
        _edit_json(good, method="lora")
        return good, "method"
    if kind == "invalid config value":
        _edit_json(good, rank=40)
        return good, "rank"
    if kind == "wrong field type":
        _edit_json(good, init_text=5)
        return good, "init_text"
    if kind == "shape mismatch":
        _edit_json(good, rank=3)  # the file holds rank-2 tensors
        return good, "shape"
    if kind == "missing tensor":
        tensors = load_file(str(good / WEIGHTS_NAME))
        del tensors["prompt"]
        save_file(tensors, str(good / WEIGHTS_NAME))
        return good, "prompt"
    if kind == "name already loaded":
        return good, "already loaded"
    raise ValueError(kind)


REFUSALS = ["hidden size", "vocab size", "model type", "model family", "missing config", "missing weights", "missing folder",
            "garbage weights", "empty weights", "corrupt json", "json not an object", "unknown field",
            "other method", "invalid config value", "wrong field type", "shape mismatch", "missing tensor",
            "name already loaded"]


@pytest.mark.parametrize("kind", REFUSALS)
def test_refused_adapter_leaves_model_untouched(kind, tmp_path):
    model = DeptModel(tiny_base("causal")).eval()
    model.add_adapter("keep", dept_config("causal", m=2, r=2))
    model.add_adapter("other", dept_config("causal", m=3, r=0))
    model.set_active_adapter("keep")
    randomise(model, "keep")
    before = (model.adapter_names, model.active_adapter, _logits(model, "causal"),
              [n for n, _ in model.trainable_parameters()])
    folder, word = _bad_folder(kind, tmp_path)
    name = "other" if kind == "name already loaded" else "new"
    with pytest.raises(AdapterFileError) as info:
        model.load_adapter(folder, name)
    assert word in str(info.value)
    after = (model.adapter_names, model.active_adapter, _logits(model, "causal"),
             [n for n, _ in model.trainable_parameters()])
    assert after[:2] == before[:2] and after[3] == before[3]
    assert torch.equal(after[2], before[2])
