"""Scoring targets: log-likelihoods for rank classification and the decoder-only loss window.

`score_candidates` is rank classification without repeating the source: the input is
encoded once (decoder-only: one prefill whose KV cache is shared by every candidate;
encoder-decoder: one encoder pass), then each candidate's few tokens are scored against
it. With C candidates that is about C times less source compute than scoring C full
(source, candidate) rows.

These functions take the frozen base model and inputs already laid out by
`DeptModel.prepare_inputs` (inputs_embeds, attention_mask, position_ids, labels): they
know nothing of adapters, so the model module calls them and never the other way round.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def cache_argument(base: nn.Module, cache) -> dict:
    """The KV cache as the base's forward takes it: transformers 5 renamed `past_key_values` to
    `cache` (the old name still works, with a FutureWarning on every call)."""
    accepted = inspect.signature(base.forward).parameters
    return {"cache": cache} if "cache" in accepted else {"past_key_values": cache}


def output_cache(out):
    """The KV cache a forward returned: `out.cache` in transformers 5 (`out.past_key_values`
    still works there but logs a deprecation on first use)."""
    return out["cache"] if "cache" in out else out.past_key_values


def target_log_likelihood(logits: Tensor, labels: Tensor, *, shifted: bool) -> Tensor:
    """Sum over target tokens of log p(token): logits (B, L, V), labels (B, L) with -100 elsewhere.

    shifted=True for decoder-only models, whose logits at t predict the token at t + 1.
    """
    if shifted:
        logits, labels = logits[:, :-1], labels[:, 1:]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, L)
    return (picked * (labels != -100)).sum(dim=1)


def target_window(labels: Tensor) -> int:
    """k such that the last k positions hold every target and the one position before it
    (whose logits predict the first target token). labels: (B, N), -100 off-target."""
    N = labels.shape[1]
    is_target = labels != -100
    first = torch.where(is_target.any(1), is_target.float().argmax(1).long(),
                        torch.full_like(labels[:, 0], N))
    return min(max(N - int(first.min()) + 1, 2), N)


def _pad_candidates(candidates: Sequence[Sequence[int]], value: int, device) -> tuple[Tensor, Tensor]:
    """(C, L) ids right-padded with `value`, and (C, L) mask of real candidate tokens."""
    width = max(len(c) for c in candidates)
    ids = torch.full((len(candidates), width), value, dtype=torch.long, device=device)
    mask = torch.zeros((len(candidates), width), dtype=torch.long, device=device)
    for i, c in enumerate(candidates):
        ids[i, :len(c)] = torch.tensor(c, device=device)
        mask[i, :len(c)] = 1
    return ids, mask


@torch.no_grad()
def score_targets(base: nn.Module, prepared: dict[str, Tensor], labels: Tensor, *, labels_in_input: bool,
                  keeps_logits: bool) -> Tensor:
    """(B,) summed log-likelihood of each row's labelled target tokens.

    Decoder-only (`labels_in_input`): prepared["labels"] (B, N) is laid out with the prompt and
    only the last k positions, which cover every target, are projected onto the vocabulary
    (`keeps_logits`: the base takes logits_to_keep). Seq2seq: `labels` (B, L) are the decoder's.
    """
    if not labels_in_input:
        logits = base(**prepared, labels=labels).logits
        return target_log_likelihood(logits, labels, shifted=False)
    labels = prepared.pop("labels")                                  # (B, N) laid out with the prompt
    k = target_window(labels) if keeps_logits else labels.shape[1]
    extra = {"logits_to_keep": k} if keeps_logits else {}
    logits = base(**prepared, **extra).logits                        # (B, k, V)
    return target_log_likelihood(logits, labels[:, labels.shape[1] - k:], shifted=True)


@torch.no_grad()
def score_candidates(base: nn.Module, prepared: dict[str, Tensor], candidates: Sequence[Sequence[int]], *,
                     labels_in_input: bool, keeps_logits: bool) -> Tensor:
    """(B, C) summed log-likelihood of each candidate's token ids after each laid-out input.

    prepared: the sources only (decoder-only: left-padded). candidates: C token-id lists, each
    exactly the target ids training used (decoder-only: with the end-of-sequence token).
    """
    B, C = prepared["inputs_embeds"].shape[0], len(candidates)
    device = prepared["inputs_embeds"].device
    if not labels_in_input:
        prepared.pop("position_ids", None)
        encoded = base.get_encoder()(inputs_embeds=prepared["inputs_embeds"],
                                     attention_mask=prepared["attention_mask"])
        hidden = encoded.last_hidden_state.repeat_interleave(C, dim=0)          # (B*C, N, d)
        labels, mask = _pad_candidates(candidates, -100, device)
        labels = labels.repeat(B, 1)                                             # row b*C + c
        logits = base(encoder_outputs=(hidden,), attention_mask=prepared["attention_mask"]
                      .repeat_interleave(C, dim=0), labels=labels).logits
        return target_log_likelihood(logits, labels, shifted=False).view(B, C)

    # Decoder-only: prefill the (left-padded) prompt + source once, keep its cache.
    prefill = base(**prepared, use_cache=True, logits_to_keep=1) if keeps_logits \
        else base(**prepared, use_cache=True)
    first = torch.log_softmax(prefill.logits[:, -1].float(), dim=-1)           # (B, V) predicts token 0
    cache = output_cache(prefill)
    cache.batch_repeat_interleave(C)
    ids, cand_mask = _pad_candidates(candidates, 0, device)
    ids, cand_mask = ids.repeat(B, 1), cand_mask.repeat(B, 1)                   # (B*C, L)
    prefix_mask = prepared["attention_mask"].repeat_interleave(C, dim=0)       # (B*C, N)
    start = prefix_mask.sum(dim=1, keepdim=True)                                # next position per row
    positions = start + torch.arange(ids.shape[1], device=device)
    rest = base(input_ids=ids, attention_mask=torch.cat([prefix_mask, cand_mask], dim=1),
                position_ids=positions, use_cache=True, **cache_argument(base, cache)).logits
    later = torch.log_softmax(rest[:, :-1].float(), dim=-1)                    # (B*C, L-1, V) predicts 1..
    picked = torch.cat([first.repeat_interleave(C, dim=0).gather(1, ids[:, :1]),
                        later.gather(2, ids[:, 1:, None]).squeeze(-1)], dim=1)  # (B*C, L)
    return (picked * cand_mask).sum(dim=1).view(B, C)
