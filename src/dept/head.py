"""The encoder family's trainable head: pool each row's output, apply its adapter's head.

Pure functions over tensors and adapters; DeptModel calls them for encoder models.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .adapter import DeptAdapter


def head_logits(hidden: Tensor, attention_mask: Tensor, row_adapters: list[str],
                adapters: dict[str, DeptAdapter], prompt_offset: int) -> Tensor:
    """(B, num_labels) from the encoder output hidden (B, N, d), each row through its adapter's head.

    Mean over the input's own tokens, not the prompt's: with m prompt slots and a short
    sentence the prompt would otherwise dominate the average (and sentence encoders such as
    MiniLM were trained pooling their tokens). Encoders are laid out [CLS][prompt][rest][pads],
    so row b's prompt is columns offset .. offset + m_b.
    """
    m_rows = torch.tensor([adapters[a].prompt_length for a in row_adapters],
                          device=hidden.device).unsqueeze(1)                    # (B, 1)
    cols = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)      # (1, N)
    in_prompt = (cols >= prompt_offset) & (cols < prompt_offset + m_rows)
    mask = (attention_mask.bool() & ~in_prompt).unsqueeze(-1).to(hidden.dtype)   # (B, N, 1)
    pooled_mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)             # (B, d)
    groups: dict[str, list[int]] = {}
    for row, name in enumerate(row_adapters):
        groups.setdefault(name, []).append(row)
    logits_by_row: list[Tensor | None] = [None] * hidden.shape[0]
    for name, rows in groups.items():
        adapter = adapters[name]
        pooled = hidden[rows, 0] if adapter.config.head_pooling == "cls" else pooled_mean[rows]
        for row, logit in zip(rows, adapter.head(pooled.to(adapter.head.weight.dtype))):
            logits_by_row[row] = logit
    if len({t.shape[0] for t in logits_by_row}) > 1:
        raise ValueError("a mixed batch of encoder adapters needs the same num_labels in every row")
    return torch.stack(logits_by_row)                                            # (B, num_labels)


def head_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean squared error for one output (regression), cross-entropy over classes otherwise."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
    return F.cross_entropy(logits, labels.long())
