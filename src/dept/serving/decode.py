"""Generation one token at a time over one KV cache, so that a finished row leaves the batch
at once (its request is answered while the others go on) and every new token can be streamed.

Decoder-only models only: the prompt and the low-rank update are applied once, at prefill
(DeptModel.prepare_inputs), exactly as DeptModel.generate does, the prompts' keys/values taken
from the persistent prompt cache; each later step feeds one token per row. Seq2seq models go through DeptModel.generate whole (engine.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from ..scoring import cache_argument, output_cache
from .adapters import AdapterRef


@dataclass
class Row:
    source_ids: list[int]
    adapter: AdapterRef | None
    """None: the base model alone."""
    max_tokens: int
    temperature: float
    top_p: float
    stops: list[str]
    generator: torch.Generator | None
    on_text: Callable[[str], None] | None = None
    """Called with each new piece of text (streaming)."""
    cancelled: Callable[[], bool] = lambda: False
    """True once the request is gone (client left, timed out): the row leaves the batch."""
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None


def _choose(logits: Tensor, row: Row) -> int:
    """Greedy at temperature 0, else sampling from the row's own generator (its seed) after
    transformers' temperature and nucleus warpers (which always keep the most likely token)."""
    if row.temperature == 0:
        return int(logits.argmax())
    warpers = LogitsProcessorList([TemperatureLogitsWarper(row.temperature)])
    if row.top_p < 1.0:
        warpers.append(TopPLogitsWarper(row.top_p))
    scores = warpers(None, logits.float()[None])                       # (1, V), -inf outside the nucleus
    return int(torch.multinomial(torch.softmax(scores[0], dim=-1), 1, generator=row.generator))


def _advance(row: Row, token: int, tokenizer, eos: set[int]) -> None:
    """Add one token to a row, emit its new text, and decide whether the row is done."""
    if token in eos:
        row.finish_reason = "stop"
        return
    row.tokens.append(token)
    text = tokenizer.decode(row.tokens, skip_special_tokens=True)
    for stop in row.stops:
        at = text.find(stop)
        if at >= 0:
            text, row.finish_reason = text[:at], "stop"
    if text.endswith("\ufffd") and row.finish_reason is None:  # half a multi-byte character: wait
        return
    if row.on_text is not None and len(text) > len(row.text):
        row.on_text(text[len(row.text):])
    row.text = text
    if row.finish_reason is None and len(row.tokens) >= row.max_tokens:
        row.finish_reason = "length"


@torch.no_grad()
def generate_rows(model, rows: list[Row], pad_id: int, on_done: Callable[[Row], None]) -> None:
    """Decode every row until it stops; `on_done(row)` is called the moment a row finishes."""
    from ..data import pad_rows

    base, tokenizer = model.base_model, model.tokenizer
    device = model.device
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    input_ids = pad_rows([r.source_ids for r in rows], pad_id, "left").to(device)            # (B, T)
    attention = pad_rows([[1] * len(r.source_ids) for r in rows], 0, "left").to(device)      # (B, T)
    if all(r.adapter is None for r in rows):  # the base model's own name: no adapter at all
        prepared = {"input_ids": input_ids, "attention_mask": attention,
                    "position_ids": (attention.cumsum(dim=1) - 1).clamp(min=0)}
    else:
        # Decoder-only: each adapter's prompt keys/values come from the persistent prompt cache
        # and the prefill runs the input tokens alone (the shared prefix, docs/method.md).
        names = [r.adapter.name for r in rows]
        shared = model.uses_shared_prefix(names, input_ids.shape[1] + max(r.max_tokens for r in rows))
        prepared = model.prepare_inputs(input_ids, attention, adapter_names=names, left_pad=True, shared=shared)
        prepared.pop("row_adapters")
    out = base(**prepared, use_cache=True)
    cache, mask = output_cache(out), prepared["attention_mask"]                           # (B, N)
    position = mask.sum(dim=1, keepdim=True)                                                 # (B, 1) next position
    live = list(range(len(rows)))
    logits = out.logits[:, -1]                                                               # (B, V)
    while live:
        tokens = []
        for i, index in enumerate(live):
            row = rows[index]
            token = _choose(logits[i], row)
            _advance(row, token, tokenizer, eos)
            if row.finish_reason is None and row.cancelled():
                row.finish_reason = "cancelled"
            tokens.append(token)
        keep = [i for i, index in enumerate(live) if rows[index].finish_reason is None]
        for i, index in enumerate(live):
            if rows[index].finish_reason is not None:
                on_done(rows[index])
        if not keep:
            return
        if len(keep) < len(live):  # finished rows leave the batch: no compute is spent on them
            select = torch.tensor(keep, device=device)
            cache.batch_select_indices(select)
            mask, position = mask[select], position[select]
            tokens = [tokens[i] for i in keep]
            live = [live[i] for i in keep]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
        step = torch.tensor(tokens, device=device).unsqueeze(1)                              # (B', 1)
        out = base(input_ids=step, attention_mask=mask, position_ids=position, use_cache=True,
                   **cache_argument(base, cache))
        cache, position, logits = output_cache(out), position + 1, out.logits[:, -1]
