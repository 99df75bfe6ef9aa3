"""Tiny random models, a tiny tokenizer and padding helpers for the core tests.

Every base model here is built from a config (hidden size 32, 2 layers, vocabulary 100),
so the mechanics are tested in milliseconds without any download.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from transformers import (
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from dept.config import DeptConfig
from dept.model import DeptModel

D = 32          # hidden size of every tiny model
VOCAB = 100
PAD = 0         # pad token id of every tiny model
FAMILIES = ("seq2seq", "causal", "encoder")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run a test module on one CPU thread (import this name to use it).

    Tiny models gain nothing from a second thread, and when other processes share the two
    cores, idle OpenMP threads spinning for work made this suite 4x slower (58 s vs 15 s).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_base(family: str, *, vocab: int = VOCAB, d: int = D, seed: int = 0, dtype=None):
    """A frozen random base model in eval mode (no dropout), its generation never stops at EOS."""
    torch.manual_seed(seed)
    if family == "seq2seq":
        config = T5Config(vocab_size=vocab, d_model=d, d_kv=8, d_ff=2 * d, num_layers=2, num_decoder_layers=2,
                          num_heads=4, dropout_rate=0.0, pad_token_id=PAD, decoder_start_token_id=PAD,
                          eos_token_id=1)
        model = T5ForConditionalGeneration(config)
        # T5's own init makes a tiny random decoder repeat one token forever, which would let
        # a broken KV cache pass the generation tests; unit-normal weights generate varied text.
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 1.0)
    elif family == "causal":
        config = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                             pad_token_id=PAD, bos_token_id=1, eos_token_id=None)
        model = LlamaForCausalLM(config)
    elif family == "encoder":
        config = BertConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=2 * d, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                            max_position_embeddings=256, pad_token_id=PAD)
        model = BertModel(config, add_pooling_layer=False)
    else:
        raise ValueError(family)
    # Random tiny models easily emit the EOS id; the tests compare fixed-length generations.
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = None
    if dtype is not None:
        model = model.to(dtype)
    return model.eval().requires_grad_(False)


def dept_config(family: str, m: int = 3, r: int = 2, s: int = 16, **kw) -> DeptConfig:
    """A DeptConfig that needs no tokenizer; encoders get a 2-label head."""
    kw.setdefault("prompt_init", "random")
    kw.setdefault("seed", 0)
    if family == "encoder":
        kw.setdefault("num_labels", 2)
    return DeptConfig(prompt_length=m, rank=r, max_length=s, **kw)


def randomise(model: DeptModel, name: str | None = None, seed: int = 1) -> None:
    """Give B (zero at init) and the head's bias random values, so the update is not trivially 0."""
    adapter = model.dept_adapters[name or model.active_adapter]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if adapter.lora_b is not None:
            adapter.lora_b.copy_(torch.randn(adapter.lora_b.shape, generator=g) * 0.5)
        if adapter.head is not None:
            adapter.head.bias.copy_(torch.randn(adapter.head.bias.shape, generator=g))


def tiny_dept(family: str, m: int = 3, r: int = 2, s: int = 16, *, random_b: bool = True, base=None,
              **kw) -> DeptModel:
    model = DeptModel(base if base is not None else tiny_base(family), dept_config(family, m, r, s, **kw))
    if random_b:
        randomise(model)
    return model.eval()


def pad(rows: list[list[int]], side: str, value: int = PAD) -> tuple[Tensor, Tensor]:
    """Tokenizer-style padding: (input_ids, attention_mask), pads on the `side` of each row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        cols = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[b, cols] = torch.tensor(row)
        mask[b, cols] = 1
    return ids, mask


def pad_like(rows: list[list[int]], mask: Tensor, value: int) -> Tensor:
    """Place `rows` where `mask` is 1 (same layout as pad()), `value` elsewhere."""
    out = torch.full(mask.shape, value, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, mask[b].bool()] = torch.tensor(row)
    return out


def random_rows(lengths: list[int], seed: int = 0, low: int = 3) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(low, VOCAB, (n,), generator=g).tolist() for n in lengths]


def tiny_tokenizer():
    """A word-level tokenizer over 100 ids that knows DePT's default init text."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + ("classify this text is positive or not : the movie was "
                                                  "wonderful negative .").split()
    words += [f"w{i}" for i in range(VOCAB - len(words))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
