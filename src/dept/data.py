"""From examples to tensors: tokenise, truncate to s, pad each batch to its longest row.

One collator serves the three families; what differs is where the target goes:
  seq2seq  input_ids = source,            labels = target (decoder side)
  causal   input_ids = source + target,   labels = -100 on the source, source_mask marks it
  encoder  input_ids = source,            labels = class index or float score (head output)

Batches are padded dynamically to their longest member (the reference code pads every
input to s, which wastes compute on short inputs); `pad_to_max_length` reproduces the
reference policy for comparisons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .families import Family

IGNORE = -100
# Decoder-only models see the source, then this cue, then the target (the reference
# code uses "{x} Label : ").
DEFAULT_DECODER_TEMPLATE = "{source}\nLabel:"


class ExampleLike(Protocol):
    source: str
    target: str
    label: object


def pad_rows(rows: Sequence[Sequence[int]], value: int, side: str, length: int | None = None) -> Tensor:
    """(B, L) long tensor: each row padded with `value` on `side` to `length` (default: longest)."""
    width = max([len(r) for r in rows] + [length or 0])
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            if side == "left":
                out[i, width - len(row):] = torch.tensor(row)
            else:
                out[i, :len(row)] = torch.tensor(row)
    return out


def pad_id(tokenizer) -> int:
    """The id rows are padded with: the tokenizer's pad token, else its end-of-sequence token
    (decoder-only tokenizers often have none; padded positions are masked either way)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@dataclass
class Collator:
    tokenizer: object
    family: Family
    max_length: int
    """s: the source is cut to this many tokens (when `truncate`)."""
    max_target_length: int = 128
    truncate: bool = True
    """False leaves long inputs whole, for adapters with on_overflow='error' to refuse."""
    pad_to_max_length: bool = False
    decoder_template: str = DEFAULT_DECODER_TEMPLATE

    @property
    def pad_id(self) -> int:
        return pad_id(self.tokenizer)

    @property
    def side(self) -> str:
        return self.family.default_padding_side

    # ----- tokenisation -------------------------------------------------------------
    def source_ids(self, source: str) -> list[int]:
        tok = self.tokenizer
        if self.family.labels_in_input:
            # Cut the source, never the cue that tells the model an answer follows.
            head, _, tail = self.decoder_template.partition("{source}")
            ids = tok(head + source, add_special_tokens=True)["input_ids"]
            cue = tok(tail, add_special_tokens=False)["input_ids"] if tail else []
            if self.truncate:
                ids = ids[: max(self.max_length - len(cue), 1)]
            return ids + cue
        return tok(source, truncation=self.truncate, max_length=self.max_length)["input_ids"]

    def target_ids(self, target: str) -> list[int]:
        tok = self.tokenizer
        if self.family.labels_in_input:
            ids = tok(" " + target, add_special_tokens=False)["input_ids"]
            return ids[: self.max_target_length - 1] + [tok.eos_token_id]
        return tok(target, truncation=True, max_length=self.max_target_length)["input_ids"]

    # ----- batches ------------------------------------------------------------------
    def _inputs(self, rows: list[list[int]]) -> dict[str, Tensor]:
        length = self.max_length if self.pad_to_max_length else None  # None: the longest row
        input_ids = pad_rows(rows, self.pad_id, self.side, length)
        attention = pad_rows([[1] * len(r) for r in rows], 0, self.side, length)
        return {"input_ids": input_ids, "attention_mask": attention}

    def source_batch(self, examples: Sequence[ExampleLike | str]) -> dict[str, Tensor]:
        """Inputs only (examples, or formatted source strings): for generation and for encoder
        classification."""
        return self._inputs([self.source_ids(e if isinstance(e, str) else e.source) for e in examples])

    def __call__(self, examples: Sequence[ExampleLike]) -> dict[str, Tensor]:
        """A training batch with labels."""
        if self.family.has_head:
            batch = self.source_batch(examples)
            labels = [e.label for e in examples]
            dtype = torch.float32 if any(isinstance(x, float) for x in labels) else torch.long
            batch["labels"] = torch.tensor(labels, dtype=dtype)
            return batch
        return self.pairs_batch([e.source for e in examples], [e.target for e in examples])

    def pairs_batch(self, sources: Sequence[str], targets: Sequence[str]) -> dict[str, Tensor]:
        """(source, target) pairs as a batch whose loss is the target's negative log-likelihood."""
        source_rows = [self.source_ids(s) for s in sources]
        target_rows = [self.target_ids(t) for t in targets]
        if not self.family.labels_in_input:
            batch = self._inputs(source_rows)
            batch["labels"] = pad_rows(target_rows, IGNORE, "right")
            return batch
        rows = [s + t for s, t in zip(source_rows, target_rows)]
        length = None if not self.pad_to_max_length else self.max_length + max(map(len, target_rows))
        batch = {
            "input_ids": pad_rows(rows, self.pad_id, self.side, length),
            "attention_mask": pad_rows([[1] * len(r) for r in rows], 0, self.side, length),
            "labels": pad_rows([[IGNORE] * len(s) + t for s, t in zip(source_rows, target_rows)],
                               IGNORE, self.side, length),
            "source_mask": pad_rows([[1] * len(s) + [0] * len(t) for s, t in zip(source_rows, target_rows)],
                                    0, self.side, length),
        }
        return batch

    def scoring_batch(self, examples: Sequence[ExampleLike], candidates: Sequence[str]) -> dict[str, Tensor]:
        """Every example paired with every candidate target, example-major: row i·C + c."""
        sources = [e.source for e in examples for _ in candidates]
        targets = [c for _ in examples for c in candidates]
        return self.pairs_batch(sources, targets)
