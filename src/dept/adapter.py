"""DeptAdapter: the trainable tensors of one adapter, and how they are born.

    prompt  P_s (m x d)  soft prompt, prepended to the input
    lora_a  A   (s x r)  kaiming-uniform, so rows differ from the start
    lora_b  B   (r x d)  zero, so scale·A·B is exactly zero at init
    head        (d -> num_labels), encoder models only

With r = 0 (vanilla prompt tuning) A and B do not exist; with m = 0 the prompt does not.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import DeptConfig

# 'vocab' init samples from the most frequent tokens, as in Lester et al. (2021): in
# BPE/SentencePiece vocabularies low ids are roughly the frequent ones.
VOCAB_INIT_TOP_TOKENS = 5000


class DeptAdapter(nn.Module):
    def __init__(self, config: DeptConfig, hidden_size: int):
        super().__init__()
        config.validate(hidden_size=hidden_size)
        self.config = config
        m, r, s, d = config.num_virtual_tokens, config.rank, config.max_length, hidden_size
        self.prompt = nn.Parameter(torch.zeros(m, d)) if m else None
        self.lora_a = nn.Parameter(torch.zeros(s, r)) if r else None
        self.lora_b = nn.Parameter(torch.zeros(r, d)) if r else None
        self.head = nn.Linear(d, config.num_labels) if config.num_labels else None

    @property
    def num_virtual_tokens(self) -> int:
        return self.config.num_virtual_tokens

    def initialise(self, word_embeddings: Tensor, init_token_ids: list[int] | None = None) -> None:
        """Fill the tensors as DePT prescribes; `word_embeddings` (V x d) is the frozen table."""
        g = torch.Generator(device="cpu")
        if self.config.seed is not None:
            g.manual_seed(self.config.seed)
        else:
            g.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        with torch.no_grad():
            if self.lora_a is not None:
                a = torch.empty_like(self.lora_a, device="cpu")
                nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=g)
                self.lora_a.copy_(a)
                self.lora_b.zero_()
            if self.prompt is not None:
                self.prompt.copy_(self._initial_prompt(word_embeddings, init_token_ids, g))
            if self.head is not None:
                w = torch.empty_like(self.head.weight, device="cpu")
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=g)
                self.head.weight.copy_(w)
                self.head.bias.zero_()

    def _initial_prompt(self, table: Tensor, token_ids: list[int] | None, g: torch.Generator) -> Tensor:
        m = self.config.num_virtual_tokens
        table = table.detach().float().cpu()  # (V, d)
        kind = self.config.prompt_init
        if kind == "text":
            if not token_ids:
                raise ValueError("prompt_init='text' needs the init text's token ids: "
                                 "pass a tokenizer to DeptModel, or use prompt_init='vocab'")
            ids = (token_ids * math.ceil(m / len(token_ids)))[:m]  # repeat, then trim to m
        elif kind == "vocab":
            ids = torch.randint(0, min(VOCAB_INIT_TOP_TOKENS, table.shape[0]), (m,), generator=g).tolist()
        else:
            # Random rows with the embeddings' own scale: a unit normal would swamp models
            # whose embeddings are small (SmolLM2's RMS is 0.136).
            rms = table.pow(2).mean().sqrt()
            return torch.randn(m, table.shape[1], generator=g) * rms
        return table[torch.tensor(ids)]

    def low_rank_table(self) -> Tensor | None:
        """scale·A·B (s x d), the update for each input position; None for vanilla PT."""
        if self.lora_a is None:
            return None
        return self.config.scale * (self.lora_a @ self.lora_b)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters())
