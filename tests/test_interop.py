"""interop.py and `dept export`: PEFT prompt-tuning folders both ways, the reference DePT code's
checkpoints read with the weights-only loader, and everything else refused in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers_tiny import (
    one_thread,  # noqa: F401  (autouse: one CPU thread per module)
    tiny_base,
)
from helpers_train import QUICK, dept_cli, dept_fails, llama_dir  # noqa: F401  (fixture)
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from dept.config import DeptConfig
from dept.errors import UserError
from dept.interop import EXPORT_MARKER
from dept.model import DeptModel


def _base(folder: Path):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _rows(folder: Path) -> list[torch.Tensor]:
    """Two unpadded single rows of different lengths (PEFT prepends the prompt and lets the
    base derive positions, so only unpadded rows are laid out alike by both)."""
    tok = AutoTokenizer.from_pretrained(folder)
    return [tok(text, return_tensors="pt")["input_ids"]
            for text in ("The movie was wonderful.", "A dull, long and tiresome film that nobody liked.")]


def _dept_pt_adapter(folder: Path, out: Path, m: int = 4) -> DeptModel:
    model = DeptModel(_base(folder), DeptConfig(prompt_length=m, rank=0, max_length=64, prompt_init="random",
                                                seed=3), tokenizer=AutoTokenizer.from_pretrained(folder))
    model.save_adapter(out, task="demo")
    return model.eval()


def test_export_to_peft_gives_the_same_logits(llama_dir, tmp_path):
    from peft import PeftModel

    dept_model = _dept_pt_adapter(llama_dir, tmp_path / "pt")
    shown = dept_cli("export", tmp_path / "pt", "--to", "peft", "--output_dir", tmp_path / "peft")
    assert shown["prompt_length"] == 4 and shown["hidden_size"] == 32
    record = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert record["peft_type"] == "PROMPT_TUNING" and record["task_type"] == "CAUSAL_LM"
    assert record["num_virtual_tokens"] == 4
    saved = load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))
    assert torch.equal(saved["prompt_embeddings"], dept_model.adapter_state_dict()["prompt"])

    peft_model = PeftModel.from_pretrained(_base(llama_dir), tmp_path / "peft").eval()
    with torch.no_grad():
        for ids in _rows(llama_dir):
            T = ids.shape[1]
            # The input tokens' logits: dept may or may not return the prompt's positions
            # (with a shared prompt KV cache it does not); PEFT returns m + T.
            ours = dept_model(input_ids=ids).logits[:, -T:]                 # (1, T, V)
            theirs = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            assert theirs.shape[1] == 4 + T
            assert torch.allclose(ours, theirs[:, -T:], atol=1e-5), float((ours - theirs[:, -T:]).abs().max())
            plain = dept_model.base_model(input_ids=ids).logits
            assert not torch.allclose(ours, plain, atol=1e-3)               # the prompt does change them

    # Exporting again into dept's own export folder replaces it; a folder of someone else's is refused.
    dept_cli("export", tmp_path / "pt", "--output_dir", tmp_path / "peft")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    line = dept_fails("export", tmp_path / "pt", "--output_dir", tmp_path / "theirs")
    assert "not empty" in line and (tmp_path / "theirs" / "notes.txt").read_text() == "mine"

    # An exported folder reads back in dept with what PEFT's config cannot hold (s, the task).
    back = DeptModel(_base(llama_dir))
    back.load_adapter(tmp_path / "peft")
    config = back.dept_adapters["default"].config
    assert (config.prompt_length, config.rank, config.max_length, config.task["task"]) == (4, 0, 64, "demo")
    assert json.loads((tmp_path / "peft" / EXPORT_MARKER).read_text())["exported_by"] == "dept"


def test_dept_adapters_with_a_lowrank_update_are_not_exported(llama_dir, tmp_path):
    model = DeptModel(_base(llama_dir), DeptConfig(prompt_length=4, rank=2, max_length=16, prompt_init="random"))
    model.save_adapter(tmp_path / "dept")
    line = dept_fails("export", tmp_path / "dept", "--output_dir", tmp_path / "out")
    assert "rank 2" in line and "position-wise" in line
    assert not (tmp_path / "out").exists()


def test_a_peft_prompt_tuning_folder_loads_in_dept(llama_dir, tmp_path):
    from peft import PromptTuningConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(_base(llama_dir), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5))
    with torch.no_grad():  # PEFT's random init is a unit normal; any values will do
        peft_model.prompt_encoder["default"].embedding.weight.mul_(0.1)
    peft_model.save_pretrained(tmp_path / "peft")
    assert set(load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))) == {"prompt_embeddings"}
    peft_model.eval()

    model = DeptModel(_base(llama_dir))
    adapter = model.load_adapter(tmp_path / "peft")
    assert (adapter.config.prompt_length, adapter.config.rank) == (5, 0)
    model.eval()
    with torch.no_grad():
        for ids in _rows(llama_dir):
            T = ids.shape[1]
            theirs = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -T:]
            assert torch.allclose(model(input_ids=ids).logits[:, -T:], theirs, atol=1e-5)

    # dept predict's greedy answer is PEFT's, decoded by PEFT's own forward one token at a time
    # (PEFT's generate() with its KV cache drifts from its forward at the 4th token here).
    from dept.data import Collator
    from dept.families import CAUSAL

    tok = AutoTokenizer.from_pretrained(llama_dir)
    text = "The movie was wonderful."
    ids = torch.tensor([Collator(tok, CAUSAL, 256).source_ids(text)])
    with torch.no_grad():
        for _ in range(4):
            step = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -1]
            ids = torch.cat([ids, step.argmax(-1, keepdim=True)], dim=1)
    (tmp_path / "in.jsonl").write_text(json.dumps({"source": text}) + "\n")
    answer = dept_cli("predict", "--adapter", tmp_path / "peft", "--model", llama_dir, "--input",
                      tmp_path / "in.jsonl", "--decoder", "generate", "--max_new_tokens", 4)
    assert answer["prediction"].strip() == tok.decode(ids[0, -4:], skip_special_tokens=True).strip()

    # dept eval and --init_from take it as they take a dept adapter.
    scored = dept_cli("eval", "--adapter", tmp_path / "peft", "--model", llama_dir, "--task", "demo",
                      "--max_eval_samples", 8)
    assert scored["examples"] == 8 and 0.0 <= scored["accuracy"] <= 1.0
    dept_cli("train", "--model", llama_dir, *QUICK, "--method", "pt", "--init_from", tmp_path / "peft",
             "--output_dir", tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["trainable_params"] == 5 * 32


def _reference_folder(folder: Path, tensors: dict, **overrides) -> Path:
    """A checkpoint folder in the reference code's layout (checkpoints/cola in ZhengxiangShi/DePT)."""
    folder.mkdir(parents=True)
    record = {"base_model_name_or_path": "t5-base", "bias": "none", "hidden_size": 32, "inference_mode": True,
              "init_lora_weights": True, "load_lora_embedding_B": True, "load_lora_embeddings": True,
              "lora_alpha": 8, "max_length": 16, "num_attention_heads": 4, "num_layers": 2,
              "num_transformer_submodules": 1, "num_virtual_tokens": 3, "peft_type": "PROMPT_TUNING_LORA",
              "prompt_tuning_init": "TEXT", "prompt_tuning_init_text": "Classify this text is postive or not:",
              "r": 2, "revision": None, "save_lora_embeddings": True, "task_type": "SEQ_2_SEQ_LM",
              "token_dim": 32, "tokenizer_name_or_path": "t5-base", **overrides}
    (folder / "adapter_config.json").write_text(json.dumps(record, indent=2))
    torch.save(tensors, folder / "adapter_model.bin")
    return folder


def _reference_tensors(m=3, s=16, r=2, d=32, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"prompt_embeddings": torch.randn(m, d, generator=g),
            "prompt_encoder.lora_embedding_A": torch.randn(s, r, generator=g),
            "prompt_encoder.lora_embedding_B": torch.randn(r, d, generator=g) * 0.3}


def test_reference_checkpoints_load_with_their_scale(tmp_path):
    tensors = _reference_tensors()
    folder = _reference_folder(tmp_path / "cola", tensors)
    base = tiny_base("seq2seq")
    model = DeptModel(base)
    config = model.load_adapter(folder).config
    assert (config.prompt_length, config.rank, config.max_length, config.alpha, config.scaling) == (3, 2, 16, 8.0, "sqrt")
    assert config.scale == pytest.approx(8 / math.sqrt(2))

    # The reference's forward, written out: right-pad every row to s, add scale·A·B to all s
    # columns, prepend the prompt, attend to the prompt and the real tokens.
    ids = torch.zeros(2, 16, dtype=torch.long)
    mask = torch.zeros(2, 16, dtype=torch.long)
    for b, n in enumerate((7, 12)):
        ids[b, :n] = torch.arange(3, 3 + n) * (b + 2) % 97 + 3
        mask[b, :n] = 1
    decoder_ids = torch.tensor([[0, 5, 9], [0, 11, 4]])
    scale = 8 / math.sqrt(2)
    with torch.no_grad():
        update = scale * tensors["prompt_encoder.lora_embedding_A"] @ tensors["prompt_encoder.lora_embedding_B"]
        embeds = base.get_input_embeddings()(ids) + update                                  # (2, 16, d)
        prompts = tensors["prompt_embeddings"].expand(2, 3, 32)
        expected = base(inputs_embeds=torch.cat([prompts, embeds], dim=1),
                        attention_mask=torch.cat([torch.ones(2, 3, dtype=torch.long), mask], dim=1),
                        decoder_input_ids=decoder_ids).logits
        ours = model.eval()(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    # dept drops the columns that are padding in every row (15 laid-out columns, not 19), so
    # the sums run in another order: equal to float32 rounding of these unit-normal weights.
    assert expected.abs().max() > 1.0
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-4), float((ours - expected).abs().max())
    plain = DeptModel(base, DeptConfig(prompt_length=3, rank=0, max_length=16, prompt_init="random"))
    plain.dept_adapters["default"].load_tensors({"prompt": tensors["prompt_embeddings"]})
    with torch.no_grad():
        without_update = plain(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids).logits
    assert not torch.allclose(ours, without_update, atol=1e-3)  # the update is really applied


_RAN = Path(__file__).with_name(".interop_pickle_ran")


def _would_run(marker: str) -> None:  # what an unpickled payload would call
    _RAN.write_text(marker)


class Payload:
    def __reduce__(self):
        return (_would_run, ("ran",))


def test_a_pickle_carrying_an_object_is_refused_unread(tmp_path):
    _RAN.unlink(missing_ok=True)
    tensors = {**_reference_tensors(), "prompt_encoder.extra": Payload()}
    folder = _reference_folder(tmp_path / "evil", tensors)
    with pytest.raises(UserError, match="refused: not a plain file of tensors"):
        DeptModel(tiny_base("seq2seq")).load_adapter(folder)
    assert not _RAN.exists()

    # weights_only admits plain numbers; they are still no tensors.
    other = _reference_folder(tmp_path / "numbers", {**_reference_tensors(), "step": 3})
    with pytest.raises(UserError, match="expected a dict of named tensors"):
        DeptModel(tiny_base("seq2seq")).load_adapter(other)


@pytest.mark.parametrize("change, message", [
    ({"peft_type": "LORA"}, "a PEFT LORA adapter"),
    ({"task_type": "SEQ_CLS"}, "task_type 'SEQ_CLS'"),
    ({"num_transformer_submodules": 2}, "decoder"),
    ({"save_lora_embeddings": False}, "never saved"),
    ({"task_type": "CAUSAL_LM"}, "decoder-only model .task_type CAUSAL_LM.: the reference left-pads"),
])
def test_foreign_adapters_dept_cannot_read_exactly_are_refused(tmp_path, change, message):
    folder = _reference_folder(tmp_path / "a", _reference_tensors(), **change)
    with pytest.raises(UserError, match=message):
        DeptModel(tiny_base("seq2seq")).load_adapter(folder)


def test_reference_tensors_must_fit_the_config(tmp_path):
    folder = _reference_folder(tmp_path / "a", _reference_tensors(s=8))  # A has 8 rows, the config says 16
    with pytest.raises(UserError, match="lora_a"):
        DeptModel(tiny_base("seq2seq")).load_adapter(folder)


def test_seq2seq_export_matches_peft_and_encoders_are_refused(tmp_path):
    from peft import PeftModel

    base = tiny_base("seq2seq")
    model = DeptModel(base, DeptConfig(prompt_length=3, rank=0, max_length=16, prompt_init="random", seed=1)).eval()
    model.save_adapter(tmp_path / "t5")
    dept_cli("export", tmp_path / "t5", "--output_dir", tmp_path / "peft")
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"
    peft_model = PeftModel.from_pretrained(tiny_base("seq2seq"), tmp_path / "peft").eval()
    ids, decoder_ids = torch.tensor([[5, 17, 33, 8, 61]]), torch.tensor([[0, 7, 12]])
    with torch.no_grad():
        ours = model(input_ids=ids, decoder_input_ids=decoder_ids).logits
        theirs = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=decoder_ids).logits
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), float((ours - theirs).abs().max())

    encoder = DeptModel(tiny_base("encoder"), DeptConfig(prompt_length=3, rank=0, max_length=16, num_labels=2,
                                                         prompt_init="random"))
    encoder.save_adapter(tmp_path / "bert")
    assert "encoder model's adapter" in dept_fails("export", tmp_path / "bert", "--output_dir", tmp_path / "b")
