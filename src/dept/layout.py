"""Where each token goes: positions of real tokens, and the soft prompt inserted per row.

Pure tensor functions, no model. Shapes: B batch, T input columns, d hidden size,
M the longest soft prompt in the batch, N the laid-out length.

Why a gather instead of `torch.cat([prompt, embeds])`: rows of one batch may be padded
on either side, may have had overflow tokens removed (holes), and may carry prompts of
different lengths (mixed-adapter batches). One index per output slot handles all of it,
and packs every row tightly, so no compute is spent on columns that are padding in
every row.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_rows(keys) -> dict:
    """{key: the indices of the rows with that key}, keys in first-seen order: a mixed batch split
    by adapter (model.py) or by candidate list (the server's classification), written once."""
    groups: dict = {}
    for row, key in enumerate(keys):
        groups.setdefault(key, []).append(row)
    return groups


def real_token_positions(mask: Tensor) -> Tensor:
    """(B, T) bool -> (B, T) long: i for the i-th True of each row, -1 where False.

    Row i of A·B is added to the i-th real token, whatever the padding side.
    """
    positions = mask.long().cumsum(dim=1) - 1
    return positions.masked_fill(~mask, -1)


def insert_prompts(
    token_embeds: Tensor,
    keep: Tensor,
    prompts: Tensor,
    prompt_lengths: Tensor,
    *,
    prompt_offset: int,
    left_pad: bool,
    labels: Tensor | None = None,
    token_type_ids: Tensor | None = None,
) -> dict[str, Tensor]:
    """Lay out each row as [pads?][first `prompt_offset` real tokens][prompt][other real tokens][pads?].

    token_embeds:   (B, T, d) input embeddings (already updated by A·B)
    keep:           (B, T) bool, the tokens to keep (attended and not truncated)
    prompts:        (B, M, d) row b's soft prompt in its first prompt_lengths[b] rows
    prompt_lengths: (B,) long
    prompt_offset:  real tokens kept before the prompt (1 keeps an encoder's [CLS] first)
    left_pad:       pads go before the sequence (decoder-only generation needs this)
    labels:         (B, T) long or None; prompt and pad slots get -100
    token_type_ids: (B, T) long or None (BERT-style segments); prompt and pad slots get 0

    Returns inputs_embeds (B, N, d), attention_mask (B, N) long, position_ids (B, N) long
    (0, 1, ... over attended slots, so left padding does not shift positions), and labels and
    token_type_ids when given, laid out the same way.
    """
    B, T, d = token_embeds.shape
    M = prompts.shape[1]
    device = token_embeds.device
    n_real = keep.sum(dim=1)                                        # (B,)
    m = prompt_lengths.to(device)                                   # (B,)
    N = int((n_real + m).max().item()) if B else 0
    # Columns of kept tokens, in order: a stable sort puts kept (0) before dropped (1).
    kept_columns = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # (B, T)

    slot = torch.arange(N, device=device).unsqueeze(0)              # (1, N)
    n_pad = (N - n_real - m).unsqueeze(1)                           # (B, 1)
    j = slot - n_pad if left_pad else slot.expand(B, N)             # (B, N) index within the row's content
    offset = torch.clamp(n_real, max=prompt_offset).unsqueeze(1)    # (B, 1) no more than the row has
    m_col = m.unsqueeze(1)
    is_pad = (j < 0) | (j >= (n_real.unsqueeze(1) + m_col))
    is_prompt = ~is_pad & (j >= offset) & (j < offset + m_col)
    # k-th kept token for real slots: before the prompt k = j, after it k = j - m.
    k = torch.where(j < offset, j, j - m_col).clamp(0, max(T - 1, 0))
    real_column = kept_columns.gather(1, k) if T else k
    # Source index into cat([tokens (T), prompts (M), zero row (1)]).
    pad_index = T + M
    source = torch.where(is_prompt, T + (j - offset), real_column)
    source = torch.where(is_pad, torch.full_like(source, pad_index), source)

    rows = torch.arange(B, device=device).unsqueeze(1)              # (B, 1)
    zero = token_embeds.new_zeros(B, 1, d)
    table = torch.cat([token_embeds, prompts.to(token_embeds.dtype), zero], dim=1)  # (B, T+M+1, d)
    inputs_embeds = table[rows, source]                             # (B, N, d)
    attention_mask = (~is_pad).long()
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    out = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask, "position_ids": position_ids}
    if labels is not None:
        ignore = labels.new_full((B, M + 1), -100)
        out["labels"] = torch.cat([labels, ignore], dim=1)[rows, source]
    if token_type_ids is not None:
        # The prompt follows [CLS] inside the first segment, whose type is 0.
        segments = torch.cat([token_type_ids, token_type_ids.new_zeros(B, M + 1)], dim=1)
        out["token_type_ids"] = segments[rows, source]
    return out
