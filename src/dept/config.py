"""DeptConfig: the shape and initialisation of one DePT adapter, validated in one place.

Vanilla prompt tuning is the same config with `rank=0`: there is no second class.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .budget import trainable_params
from .errors import UserError

SCALINGS = ("sqrt", "linear")
PROMPT_INITS = ("text", "vocab", "random")
OVERFLOW_POLICIES = ("truncate", "error")
POOLINGS = ("mean", "cls")

# Reference implementation's default init text (typo fixed).
DEFAULT_INIT_TEXT = "Classify this text is positive or not:"


# Other spellings of a field, accepted when reading (PEFT's name for m).
FIELD_ALIASES = {"num_virtual_tokens": "prompt_length"}


class ConfigError(UserError, ValueError):
    """A DeptConfig field has a value that cannot describe an adapter."""


@dataclass
class DeptConfig:
    """One DePT adapter: a soft prompt of `prompt_length` rows and a rank-`rank`
    update `scale·A·B` of the first `max_length` input token embeddings."""

    prompt_length: int = 60
    """m: rows of the soft prompt P_s (m x d) prepended to the input."""
    rank: int = 30
    """r: rank of the position-wise update A (s x r) · B (r x d); 0 gives vanilla prompt tuning."""
    max_length: int = 256
    """s: the maximum input length; row i of A·B updates the i-th real input token."""
    alpha: float = 8.0
    """Numerator of the update's scale (the reference code uses 8)."""
    scaling: str = "sqrt"
    """'sqrt': scale = alpha/sqrt(r) as the reference code; 'linear': alpha/r as LoRA."""
    prompt_init: str = "text"
    """'text': embeddings of `init_text` tokens, repeated to m; 'vocab': m token embeddings
    sampled from the vocabulary; 'random': normal with the embeddings' RMS."""
    init_text: str = DEFAULT_INIT_TEXT
    """Text whose token embeddings initialise the prompt when prompt_init='text'."""
    on_overflow: str = "truncate"
    """Inputs with more than s real tokens: 'truncate' keeps the first s, 'error' raises."""
    num_labels: int | None = None
    """Encoder models only: size of the trainable head (1 = regression). None elsewhere."""
    head_pooling: str = "mean"
    """Encoder models only: 'mean' over the input's own tokens (not the prompt) or 'cls' (first token)."""
    seed: int | None = None
    """Seed of the adapter's initialisation (A, the random/vocab prompt); None uses torch's state."""
    task: dict[str, Any] = field(default_factory=dict)
    """Free-form task metadata saved with the adapter (task name, target words, ...)."""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def is_prompt_tuning(self) -> bool:
        """True for vanilla prompt tuning (no low-rank update)."""
        return self.rank == 0

    @property
    def scale(self) -> float:
        """The factor of A·B: alpha/sqrt(r) ('sqrt') or alpha/r ('linear'); 0 when r=0."""
        if self.rank == 0:
            return 0.0
        return self.alpha / (math.sqrt(self.rank) if self.scaling == "sqrt" else self.rank)

    def validate(self, hidden_size: int | None = None) -> None:
        """Raise ConfigError naming the field for any value that cannot work.

        With `hidden_size` (known once a base model is attached) also checks r <= min(s, d).
        """

        def need(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise ConfigError(f"DeptConfig.{name}: {message}")

        def integer(value: Any) -> bool:  # bool is an int subclass, but True is no size
            return isinstance(value, int) and not isinstance(value, bool)

        for name in ("prompt_length", "rank", "max_length"):
            value = getattr(self, name)
            need(integer(value), name, f"must be an integer, got {value!r}")
            need(value >= 0, name, f"must be >= 0, got {value}")
        need(self.max_length > 0, "max_length", "must be > 0 (it is s, the maximum input length)")
        need(self.prompt_length > 0 or self.rank > 0, "prompt_length",
             "prompt_length=0 and rank=0 together leave nothing to train")
        need(self.rank <= self.max_length, "rank",
             f"rank {self.rank} exceeds max_length {self.max_length}: A (s x r) cannot have rank > s")
        if hidden_size is not None:
            need(self.rank <= hidden_size, "rank",
                 f"rank {self.rank} exceeds the model's hidden size {hidden_size}")
        need(isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool)
             and math.isfinite(self.alpha) and self.alpha > 0,
             "alpha", f"must be a positive number, got {self.alpha!r}")
        need(self.scaling in SCALINGS, "scaling", f"must be one of {SCALINGS}, got {self.scaling!r}")
        need(self.prompt_init in PROMPT_INITS, "prompt_init",
             f"must be one of {PROMPT_INITS}, got {self.prompt_init!r}")
        need(isinstance(self.init_text, str), "init_text", f"must be a string, got {self.init_text!r}")
        need(self.prompt_init != "text" or bool(self.init_text.strip()), "init_text",
             "must be non-empty when prompt_init='text'")
        need(self.on_overflow in OVERFLOW_POLICIES, "on_overflow",
             f"must be one of {OVERFLOW_POLICIES}, got {self.on_overflow!r}")
        need(self.num_labels is None or (integer(self.num_labels) and self.num_labels >= 1),
             "num_labels", f"must be None or an integer >= 1, got {self.num_labels!r}")
        need(self.head_pooling in POOLINGS, "head_pooling",
             f"must be one of {POOLINGS}, got {self.head_pooling!r}")
        need(self.seed is None or integer(self.seed), "seed", f"must be None or an integer, got {self.seed!r}")
        need(isinstance(self.task, dict), "task", f"must be a dict of task metadata, got {self.task!r}")

    def trainable_params(self, hidden_size: int) -> int:
        """Parameters of the prompt and the pair: m·d + (s + d)·r (the head is extra)."""
        return trainable_params(self.prompt_length, self.rank, self.max_length, hidden_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "DeptConfig":
        """Build from a dict, refusing unknown fields (named, with `source`) rather than dropping them.
        PEFT's spelling `num_virtual_tokens` (dept 0.1 wrote it) is read as prompt_length."""
        data = {FIELD_ALIASES.get(k, k): v for k, v in data.items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown DeptConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)
