"""The one generation path of decoder-only models: one token at a time over one KV cache, so
that a finished row leaves the batch at once (a server answers it while the others go on) and
every new token can be streamed.

`DeptModel.generate` (evaluation, the library) and the server both decode here. The prompt and
the low-rank update are applied once, at prefill (DeptModel.prepare_inputs), the prompts' keys
and values taken from the persistent prompt cache; each later step feeds one token per row.
Seq2seq models keep Hugging Face's `generate` (DeptModel.generate).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from .data import pad_rows
from .scoring import cache_argument, output_cache


@dataclass(frozen=True)
class AdapterRef:
    """The handle a row carries to its adapter (as vLLM's LoRARequest). A server gives each
    load a new id, so a row admitted for an adapter that was removed, or removed and loaded
    again under the same name, is told apart from the one served now."""

    name: str
    id: int = 0
    path: str = ""


@dataclass
class Row:
    source_ids: list[int]
    adapter: AdapterRef | None
    """None: the base model alone."""
    max_tokens: int
    temperature: float = 0.0
    """0: greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0: no top-k cut."""
    stops: list[str] = field(default_factory=list)
    generator: torch.Generator | None = None
    """The row's own random stream (its seed); None: torch's global one."""
    seed: int | None = None
    """The seed of `generator`, for an engine that draws with its own random streams (vLLM)."""
    min_tokens: int = 0
    """End-of-sequence is not chosen before this many new tokens."""
    on_text: Callable[[str], None] | None = None
    """Called with each new piece of text (streaming)."""
    cancelled: Callable[[], bool] = lambda: False
    """True once the request is gone (client left, timed out): the row leaves the batch."""
    tokens: list[int] = field(default_factory=list)
    """The new tokens, without the end-of-sequence token."""
    text: str = ""
    finish_reason: str | None = None
    ended_by: int | None = None
    """The end-of-sequence token that stopped the row, if one did."""


def choose(logits: Tensor, row: Row, eos: set[int]) -> int:
    """Greedy at temperature 0, else sampling from the row's generator after transformers'
    temperature, top-k and nucleus warpers (which always keep the most likely token)."""
    if len(row.tokens) < row.min_tokens and eos:
        logits = logits.clone()
        logits[list(eos)] = float("-inf")
    if row.temperature == 0:
        return int(logits.argmax())
    warpers = LogitsProcessorList([TemperatureLogitsWarper(row.temperature)])
    if row.top_k > 0:
        warpers.append(TopKLogitsWarper(row.top_k))
    if row.top_p < 1.0:
        warpers.append(TopPLogitsWarper(row.top_p))
    scores = warpers(None, logits.float()[None])                       # (1, V), -inf where cut
    return int(torch.multinomial(torch.softmax(scores[0], dim=-1), 1, generator=row.generator))


def advance(row: Row, token: int, tokenizer, eos: set[int]) -> None:
    """Add one token to a row, emit its new text (unless `tokenizer` is None: tokens only),
    and decide whether the row is done."""
    if token in eos:
        row.finish_reason, row.ended_by = "stop", token
        return
    row.tokens.append(token)
    if tokenizer is not None:
        _emit_text(row, tokenizer)
    if row.finish_reason is None and len(row.tokens) >= row.max_tokens:
        row.finish_reason = "length"


def _emit_text(row: Row, tokenizer) -> None:
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


def eos_ids(model) -> set[int]:
    """The tokens that end a row: the generation config's (an int or a list) and the tokenizer's."""
    configured = model.base_model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [] if configured is None else [configured])
    if model.tokenizer is not None and model.tokenizer.eos_token_id is not None:
        ids.add(model.tokenizer.eos_token_id)
    return ids


@dataclass
class _Batch:
    """The running decode: rows in the batch, their KV cache and the next step's inputs."""

    rows: list[Row]
    cache: object
    """Hugging Face cache, (B, H, N, D) per layer."""
    mask: Tensor
    """(B, N): 1 where a column holds a real token (prompt, source or generated)."""
    position: Tensor
    """(B, 1): the position of each row's next token."""
    logits: Tensor
    """(B, V): the distribution of each row's next token."""


def _prefill(model, rows: list[Row], pad_id: int) -> _Batch:
    """The first forward over the rows' sources. The base model's own rows (adapter None) and
    the adapters' rows are prefilled apart and their caches merged."""
    groups = [g for g in ([r for r in rows if r.adapter is None], [r for r in rows if r.adapter is not None]) if g]
    parts = [_prefill_group(model, g, pad_id) for g in groups]
    if len(parts) == 2 and not can_merge(parts[0].cache):
        raise ValueError("on this model the base model's own rows and adapters' rows decode apart")
    return parts[0] if len(parts) == 1 else _merge(parts[0], parts[1])


def _prefill_group(model, rows: list[Row], pad_id: int) -> _Batch:
    device = model.device
    input_ids = pad_rows([r.source_ids for r in rows], pad_id, "left").to(device)            # (B, T)
    attention = pad_rows([[1] * len(r.source_ids) for r in rows], 0, "left").to(device)      # (B, T)
    if rows[0].adapter is None:  # the base model alone: no adapter at all
        prepared = {"input_ids": input_ids, "attention_mask": attention,
                    "position_ids": (attention.cumsum(dim=1) - 1).clamp(min=0)}
    else:
        # Each adapter's prompt keys/values come from the persistent prompt cache and the
        # prefill runs the input tokens alone (the shared prefix, docs/method.md).
        names = [r.adapter.name for r in rows]
        shared = model.uses_shared_prefix(names, input_ids.shape[1] + max(r.max_tokens for r in rows))
        prepared = model.prepare_inputs(input_ids, attention, adapter_names=names, left_pad=True, shared=shared)
        prepared.pop("row_adapters")
    out = model.base_model(**prepared, use_cache=True)
    mask = prepared["attention_mask"]                                                        # (B, N)
    return _Batch(list(rows), output_cache(out), mask, mask.sum(dim=1, keepdim=True), out.logits[:, -1])


def can_merge(cache) -> bool:
    """Whether rows prefilled apart can join this cache: every layer a plain full-attention
    layer of keys and values (a sliding window's layer keeps its own window; not merged)."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def _merge(a: _Batch, b: _Batch) -> _Batch:
    """One batch of a's rows then b's. The shorter cache is padded on the left with masked
    columns: keys are stored after the rotary embedding and each row keeps its own positions,
    so a row's attention over its real columns is unchanged."""
    width = max(a.mask.shape[1], b.mask.shape[1])

    def left(t: Tensor, dim: int) -> Tensor:                            # pad dim `dim` to `width`
        missing = width - t.shape[dim]
        if missing == 0:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([t.new_zeros(shape), t], dim=dim)

    for layer, other in zip(a.cache.layers, b.cache.layers):
        layer.keys = torch.cat([left(layer.keys, 2), left(other.keys, 2)])       # (B+B', H, N, D)
        layer.values = torch.cat([left(layer.values, 2), left(other.values, 2)])
    return _Batch(a.rows + b.rows, a.cache, torch.cat([left(a.mask, 1), left(b.mask, 1)]),
                  torch.cat([a.position, b.position]), torch.cat([a.logits, b.logits]))


def _keep(batch: _Batch, keep: list[int]) -> None:
    """Only the rows at `keep` go on: no compute is spent on finished rows."""
    select = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
    batch.cache.batch_select_indices(select)
    batch.rows = [batch.rows[i] for i in keep]
    batch.mask, batch.position, batch.logits = batch.mask[select], batch.position[select], batch.logits[select]


@torch.no_grad()
def generate_rows(model, rows: list[Row], pad_id: int, on_done: Callable[[Row], None],
                  admit: Callable[[int], list[Row]] | None = None, text: bool = True) -> None:
    """Decode every row until it stops; `on_done(row)` is called the moment a row finishes.
    `admit(running)`, called between steps with the number of rows running, returns new rows
    that join the batch there (continuous batching): they are prefilled apart and their KV
    rows merged with the running ones (only where can_merge; else they are not asked for).
    `text`: False decodes tokens alone (no text, no stop strings, no streaming)."""
    tokenizer, eos = model.tokenizer if text else None, eos_ids(model)
    batch = _prefill(model, rows, pad_id)
    while batch.rows:
        tokens = []
        for i, row in enumerate(batch.rows):
            token = choose(batch.logits[i], row, eos)
            advance(row, token, tokenizer, eos)
            if row.finish_reason is None and row.cancelled():
                row.finish_reason = "cancelled"
            tokens.append(token)
        for row in batch.rows:
            if row.finish_reason is not None:
                on_done(row)
        keep = [i for i, row in enumerate(batch.rows) if row.finish_reason is None]
        if len(keep) < len(batch.rows):
            if not keep and admit is None:
                return
            _keep(batch, keep)
            tokens = [tokens[i] for i in keep]
        joining = admit(len(keep)) if admit is not None and can_merge(batch.cache) else []
        if keep:
            batch.mask = torch.cat([batch.mask, batch.mask.new_ones(len(keep), 1)], dim=1)
            step = torch.tensor(tokens, device=batch.mask.device).unsqueeze(1)             # (B', 1)
            out = model.base_model(input_ids=step, attention_mask=batch.mask, position_ids=batch.position,
                                   use_cache=True, **cache_argument(model.base_model, batch.cache))
            batch.cache, batch.position, batch.logits = output_cache(out), batch.position + 1, out.logits[:, -1]
        if joining:
            newcomers = _prefill(model, joining, pad_id)
            batch = _merge(batch, newcomers) if keep else newcomers


GENERATE_ARGUMENTS = {"max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p",
                      "pad_token_id", "use_cache"}


def generate_tensor(model, input_ids: Tensor, attention_mask: Tensor | None,
                    adapter_names: Sequence[str] | None, pad: int, **kwargs) -> Tensor:
    """DeptModel.generate for decoders: the new tokens (B, new) as Hugging Face's generate
    returns them (a row's end-of-sequence token kept, then padding). Greedy unless
    `do_sample`; the sampling knobs not given are the base model's generation config's."""
    unknown = sorted(set(kwargs) - GENERATE_ARGUMENTS)
    if unknown:
        raise TypeError(f"DeptModel.generate (decoder-only) does not take {unknown}; "
                        f"it takes {sorted(GENERATE_ARGUMENTS)}")
    if kwargs.get("use_cache", True) is False:
        raise ValueError("decoder-only generation always uses the KV cache (use_cache=False is not offered)")
    config = model.base_model.generation_config
    sample = kwargs.get("do_sample", config.do_sample)
    knobs = {"temperature": kwargs.get("temperature", config.temperature or 1.0),
             "top_k": kwargs.get("top_k", config.top_k or 0), "top_p": kwargs.get("top_p", config.top_p or 1.0)}
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    names = list(adapter_names) if adapter_names is not None else [model.active_adapter] * len(input_ids)
    rows = [Row([int(t) for t in ids[m.bool()]], AdapterRef(name) if name else None,
                kwargs.get("max_new_tokens") or config.max_new_tokens or 20,
                min_tokens=kwargs.get("min_new_tokens") or 0, **(knobs if sample else {}))
            for ids, m, name in zip(input_ids.cpu(), mask.cpu(), names)]
    pad = kwargs.get("pad_token_id", pad)
    generate_rows(model, rows, pad, on_done=lambda row: None, text=False)
    ended = [r.tokens + ([r.ended_by] if r.ended_by is not None else []) for r in rows]
    width = max(len(t) for t in ended)
    return torch.tensor([t + [pad] * (width - len(t)) for t in ended], device=input_ids.device)
