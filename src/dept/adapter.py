"""DeptAdapter: the trainable tensors of one adapter, their roles, and how they are born.

    role     tensor   shape    init
    prompt   prompt   (m, d)   token embeddings of an init text, vocabulary rows, or random
    lowrank  lora_a   (s, r)   kaiming-uniform, so rows differ from the start
    lowrank  lora_b   (r, d)   zero, so scale·A·B is exactly zero at init
    head     head.*   d -> k   kaiming-uniform, bias zero (encoder models only)

With r = 0 (vanilla prompt tuning) A and B do not exist; with m = 0 the prompt does not.
`adapter_params()` is the one answer to "which tensors are the adapter, and what is
each for": optimiser groups, checkpoints, counts and adapter files all read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .config import DeptConfig

# The roles of an adapter's tensors, in the order adapter_params() lists them; each
# role trains at its own learning rate.
ROLES = ("prompt", "lowrank", "head")

# 'vocab' init samples from the most frequent tokens, as in Lester et al. (2021): in
# BPE/SentencePiece vocabularies low ids are roughly the frequent ones.
VOCAB_INIT_TOP_TOKENS = 5000


def _generator(seed: int | None) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    return g


def received_rms(embedding: nn.Module, chunk: int = 8192) -> float:
    """RMS of the input embeddings as the model receives them: the embedding module's output, so
    a scale inside the module counts (Gemma multiplies its table by √d; the table's own RMS would
    be 25× too small there). Over the whole vocabulary, a chunk at a time."""
    vocab, d = embedding.num_embeddings, embedding.embedding_dim
    total = 0.0
    with torch.no_grad():
        for start in range(0, vocab, chunk):
            ids = torch.arange(start, min(vocab, start + chunk), device=embedding.weight.device)
            total += float(embedding(ids).double().pow(2).sum())
    return math.sqrt(total / (vocab * d))


def mismatched(params: Mapping[str, Tensor], saved: Mapping[str, Tensor]) -> list[str]:
    """Names in only one of the two, or whose shapes differ: what `restore` would refuse."""
    return sorted(set(saved) ^ set(params)) + sorted(
        n for n in set(saved) & set(params) if tuple(saved[n].shape) != tuple(params[n].shape))


def restore(params: Mapping[str, Tensor], saved: Mapping[str, Tensor]) -> None:
    """Copy saved tensors into the live ones of the same names, each keeping its device and dtype.
    Adapter files, checkpoints and the best adapter of a run are all restored through this."""
    differ = mismatched(params, saved)
    if differ:
        raise ValueError(f"saved tensors do not fit the live ones ({differ[:5]})")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)


def _kaiming(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    """nn.Linear's default init (kaiming-uniform, a=√5), drawn from `g` on the CPU."""
    weight = torch.empty(shape)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=g)
    return weight


class DeptAdapter(nn.Module):
    def __init__(self, config: DeptConfig, hidden_size: int):
        super().__init__()
        config.validate(hidden_size=hidden_size)
        self.config = config
        m, r, s, d = config.prompt_length, config.rank, config.max_length, hidden_size
        self.prompt = nn.Parameter(torch.zeros(m, d)) if m else None
        self.lora_a = nn.Parameter(torch.zeros(s, r)) if r else None
        self.lora_b = nn.Parameter(torch.zeros(r, d)) if r else None
        self.head = nn.Linear(d, config.num_labels) if config.num_labels else None

    @property
    def prompt_length(self) -> int:
        return self.config.prompt_length

    def adapter_params(self) -> list[tuple[str, str, nn.Parameter]]:
        """(role, name, parameter) of every tensor of the adapter; names are relative to it
        (prompt, lora_a, lora_b, head.weight, head.bias) and are the adapter file's keys."""
        listed = [("prompt", "prompt", self.prompt), ("lowrank", "lora_a", self.lora_a),
                  ("lowrank", "lora_b", self.lora_b)]
        if self.head is not None:
            listed += [("head", f"head.{n}", p) for n, p in self.head.named_parameters()]
        return [(role, name, p) for role, name, p in listed if p is not None]

    def tensors(self) -> dict[str, Tensor]:
        """name -> detached tensor, as saved in an adapter file."""
        return {name: p.detach() for _, name, p in self.adapter_params()}

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for _, name, p in self.adapter_params()}

    def load_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Copy `tensors` (names as tensors() gives them) into the adapter's own device and dtype."""
        restore({name: p for _, name, p in self.adapter_params()}, tensors)

    def initialise(self, embedding: nn.Module, init_token_ids: list[int] | None = None) -> None:
        """Fill the tensors as DePT prescribes; `embedding` is the frozen input embedding module, read
        through its output (the vectors the model receives, scale included), not its raw table."""
        g = _generator(self.config.seed)
        with torch.no_grad():
            if self.lora_a is not None:
                self.lora_a.copy_(_kaiming(tuple(self.lora_a.shape), g))
                self.lora_b.zero_()
            if self.prompt is not None:
                self.prompt.copy_(self._initial_prompt(embedding, init_token_ids, g))
            if self.head is not None:
                self.head.weight.copy_(_kaiming(tuple(self.head.weight.shape), g))
                self.head.bias.zero_()

    def replace_head(self, num_labels: int, seed: int | None) -> None:
        """Transfer between tasks with different classes: keep the prompt and the low-rank
        update, start a new head for the target's classes (initialised as initialise() does)."""
        old = self.head
        head = nn.Linear(old.in_features, num_labels).to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            head.weight.copy_(_kaiming((num_labels, old.in_features), _generator(seed)))
            head.bias.zero_()
        head.requires_grad_(old.weight.requires_grad)
        self.head = head
        self.config.num_labels = num_labels

    def _initial_prompt(self, embedding: nn.Module, token_ids: list[int] | None, g: torch.Generator) -> Tensor:
        m = self.config.prompt_length
        vocab, d = embedding.num_embeddings, embedding.embedding_dim
        kind = self.config.prompt_init
        if kind == "text":
            if not token_ids:
                raise ValueError("prompt_init='text' needs the init text's token ids: "
                                 "pass a tokenizer to DeptModel, or use prompt_init='vocab'")
            ids = (token_ids * math.ceil(m / len(token_ids)))[:m]  # repeat, then trim to m
        elif kind == "vocab":
            ids = torch.randint(0, min(VOCAB_INIT_TOP_TOKENS, vocab), (m,), generator=g).tolist()
        else:
            # Random rows with the embeddings' own scale: a unit normal would swamp models
            # whose embeddings are small (SmolLM2's RMS is 0.136).
            return torch.randn(m, d, generator=g) * received_rms(embedding)
        with torch.no_grad():
            return embedding(torch.tensor(ids, device=embedding.weight.device)).float().cpu()  # (m, d)

    def lowrank_table(self) -> Tensor | None:
        """scale·A·B (s x d), the update for each input position; None for vanilla PT."""
        if self.lora_a is None:
            return None
        return self.config.scale * (self.lora_a @ self.lora_b)
