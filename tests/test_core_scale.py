"""Scale is read off the embeddings as the model receives them: Gemma multiplies its table by
√d inside the embedding module, so the raw table is the wrong yardstick for the prompt's init
and for the scale-aware learning rates."""

from __future__ import annotations

import math

import torch
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from dept.adapter import received_rms
from dept.config import DeptConfig
from dept.model import DeptModel
from dept.training.methods import embedding_rms

D = 64


def tiny_gemma():
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=100, hidden_size=D, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, pad_token_id=0)
    return Gemma3ForCausalLM(config).eval().requires_grad_(False)


def test_the_rms_is_the_modules_output_not_its_table():
    base = tiny_gemma()
    table_rms = float(base.get_input_embeddings().weight.pow(2).mean().sqrt())
    assert math.isclose(received_rms(base.get_input_embeddings()), math.sqrt(D) * table_rms, rel_tol=1e-5)
    assert math.isclose(embedding_rms(base), math.sqrt(D) * table_rms, rel_tol=1e-5)


def test_an_unscaled_table_gives_its_own_rms():
    embedding = torch.nn.Embedding(1000, 16)
    assert math.isclose(received_rms(embedding, chunk=64), float(embedding.weight.pow(2).mean().sqrt()),
                        rel_tol=1e-5)


def test_prompt_init_copies_the_vectors_the_model_receives():
    base = tiny_gemma()
    model = DeptModel(base)
    adapter = model.add_adapter("default", DeptConfig(prompt_length=4, rank=0, max_length=8, prompt_init="vocab",
                                                      seed=3))
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 100, (4,), generator=g)
    assert torch.allclose(adapter.prompt, base.get_input_embeddings()(ids), atol=1e-6)
    random = model.add_adapter("r", DeptConfig(prompt_length=400, rank=0, max_length=8, prompt_init="random", seed=1))
    assert math.isclose(float(random.prompt.pow(2).mean().sqrt()), embedding_rms(base), rel_tol=0.1)
