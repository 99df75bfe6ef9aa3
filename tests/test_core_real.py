"""Real packaged models (SmolLM2-135M, MiniLM-L6), hub-style loading from a local folder,
devices and dtypes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_tiny import FAMILIES, dept_config, pad, randomise, random_rows, tiny_base, tiny_dept, tiny_tokenizer
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)

from dept.config import DeptConfig
from dept.model import DeptModel
from dept.pretrained import resolve


def _nonzero(t: torch.Tensor | None) -> bool:
    return t is not None and bool(torch.count_nonzero(t))


@pytest.mark.slow
def test_smollm2_loss_and_gradient_on_a_real_sentence():
    model = DeptModel.from_pretrained("smollm2-135m", DeptConfig(prompt_length=20, rank=8, max_length=64))
    assert model.family.name == "causal" and model.hidden_size == 576
    tok = model.tokenizer
    source = tok("The movie was wonderful.")["input_ids"]
    target = tok(" positive", add_special_tokens=False)["input_ids"]
    adapter = model.dept_adapters["default"]
    # 'text' init (the default) copied the init text's token embeddings.
    init_ids = tok(adapter.config.init_text, add_special_tokens=False)["input_ids"]
    table = model.base_model.get_input_embeddings().weight
    assert torch.equal(adapter.prompt[0].detach(), table[init_ids[0]])

    out = model(torch.tensor([source + target]), labels=torch.tensor([[-100] * len(source) + target]))
    assert torch.isfinite(out.loss) and out.loss > 0
    out.loss.backward()
    assert _nonzero(adapter.lora_b.grad) and _nonzero(adapter.prompt.grad)
    assert torch.count_nonzero(adapter.lora_a.grad) == 0  # B = 0 at init
    assert all(p.grad is None for p in model.base_model.parameters())
    assert sum(p.numel() for _, p in model.trainable_parameters()) == 20 * 576 + (64 + 576) * 8

    with torch.no_grad():
        adapter.lora_b.normal_(0, 0.01)
    new = model.generate(torch.tensor([source]), max_new_tokens=3, do_sample=False)
    assert new.shape == (1, 3)


@pytest.mark.slow
def test_minilm_classifier_loss_and_gradients():
    config = DeptConfig(prompt_length=10, rank=4, max_length=64, num_labels=2)
    model = DeptModel.from_pretrained("minilm-l6", config)
    assert model.family.name == "encoder" and model.tokenizer.padding_side == "right"
    batch = model.tokenizer(["The movie was wonderful.", "Dull."], return_tensors="pt", padding=True)
    assert "token_type_ids" in batch  # a BERT tokenizer's output goes in as it is
    out = model(**batch, labels=torch.tensor([1, 0]))
    assert out.logits.shape == (2, 2) and torch.isfinite(out.loss)
    out.loss.backward()
    adapter = model.dept_adapters["default"]
    assert _nonzero(adapter.head.weight.grad) and _nonzero(adapter.head.bias.grad)
    assert _nonzero(adapter.lora_b.grad) and _nonzero(adapter.prompt.grad)
    assert all(p.grad is None for p in model.base_model.parameters())


def test_resolve_passes_local_folders_and_hub_names_through(tmp_path):
    assert resolve(str(tmp_path)) == str(tmp_path)
    assert resolve("some-org/some-model") == "some-org/some-model"


def _save_tiny(family: str, folder) -> torch.nn.Module:
    base = tiny_base(family)
    base.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return base


@pytest.mark.parametrize("family", FAMILIES)
def test_from_pretrained_local_folder(family, tmp_path):
    base = _save_tiny(family, tmp_path)
    config = dept_config(family, m=3, r=2, prompt_init="text")
    loaded = DeptModel.from_pretrained(str(tmp_path), config)
    assert loaded.family.name == family and not loaded.base_model.training
    assert not any(p.requires_grad for p in loaded.base_model.parameters())
    assert loaded.tokenizer.padding_side == loaded.family.default_padding_side
    assert loaded.tokenizer.pad_token == "<pad>"
    # The same base in memory with the same adapter gives the same outputs.
    ref = DeptModel(base, config, tokenizer=tiny_tokenizer()).eval()
    randomise(ref)
    loaded.dept_adapters["default"].load_state_dict(ref.dept_adapters["default"].state_dict())
    ids, mask = pad(random_rows([5, 3]), loaded.tokenizer.padding_side)
    kwargs = {"decoder_input_ids": torch.tensor([[0, 5], [0, 6]])} if family == "seq2seq" else {}
    with torch.no_grad():
        got, want = loaded(ids, mask, **kwargs).logits, ref(ids, mask, **kwargs).logits
    assert torch.allclose(got, want, atol=1e-5)


def test_from_pretrained_dtype_and_device(tmp_path):
    _save_tiny("causal", tmp_path)
    model = DeptModel.from_pretrained(str(tmp_path), dept_config("causal"), dtype=torch.bfloat16, device="cpu")
    assert model.base_model.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for _, p in model.trainable_parameters())


def test_bf16_base_keeps_float32_adapter():
    model = DeptModel(tiny_base("causal", dtype=torch.bfloat16), dept_config("causal", m=3, r=2))
    randomise(model)
    adapter = model.dept_adapters["default"]
    assert all(p.dtype == torch.float32 for p in adapter.parameters())
    ids, mask = pad(random_rows([6, 4]), "right")
    labels = torch.where(mask.bool(), ids, -100)
    labels[:, :2] = -100
    out = model(ids, mask, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert adapter.lora_b.grad.dtype == torch.float32 and _nonzero(adapter.lora_b.grad)
    assert _nonzero(adapter.prompt.grad)
    assert model.generate(ids, mask, max_new_tokens=2, do_sample=False).shape == (2, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("family", FAMILIES)
def test_everything_moves_to_cuda(family):
    cpu = tiny_dept(family, m=3, r=2)
    gpu = tiny_dept(family, m=3, r=2).to("cuda")
    assert gpu.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in gpu.parameters())
    ids, mask = pad(random_rows([5, 3]), "right")
    kwargs = {"decoder_input_ids": torch.tensor([[0, 5], [0, 6]])} if family == "seq2seq" else {}
    with torch.no_grad():
        want = cpu(ids, mask, **kwargs).logits
        got = gpu(ids.cuda(), mask.cuda(), **{k: v.cuda() for k, v in kwargs.items()}).logits
    assert torch.allclose(got.cpu(), want, atol=1e-4)
    gpu.add_adapter("new", dept_config(family))
    assert gpu.dept_adapters["new"].lora_a.device.type == "cuda"
    if family != "encoder":
        assert gpu.generate(ids.cuda(), mask.cuda(), max_new_tokens=2, do_sample=False).device.type == "cuda"


def test_cache_publish_keeps_the_first_finished_copy(tmp_path):
    from dept.pretrained import _publish

    def finished(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(name)
        return folder

    target = tmp_path / "model"
    _publish(finished("first"), target)
    assert (target / "config.json").read_text() == "first"
    _publish(finished("second"), target)  # another process finished too: no error, first stays
    assert (target / "config.json").read_text() == "first"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "junk").write_text("x")
    with pytest.raises(OSError):
        _publish(finished("third"), broken)  # a non-empty folder without config.json is an error
