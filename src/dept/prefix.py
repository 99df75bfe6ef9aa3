"""The shared prefix: a decoder-only model runs each adapter's soft prompt once per batch.

In a decoder-only model the prompt comes before every input token and attention is
causal, so the prompt's keys and values depend on the prompt alone (DePT's low-rank
update touches input tokens only). Instead of running the laid-out (B, m + T) rows,

    KV_a   = base(P_a)                  once per adapter a in the batch, (1, H, m_a, hd) per layer
    cache  = [zeros ; KV_a] per row     right-aligned in M = max m_a columns, (B, H, M, hd)
    out    = base(W', cache, mask=[prompt mask ; input mask], positions m_b, m_b + 1, ...)

which gives the same logits for every input token: the same keys, values, positions and
mask, only the prompt's own rows of attention and MLP are not recomputed B times.
Encoder-decoder and encoder models cannot do this: their encoders are bidirectional,
so the prompt's states depend on the input.

`PromptCache` keeps KV_a between no-grad calls (evaluation, scoring, generation) until
the prompt changes; training always recomputes it so gradients reach the prompt.

Layer 2: takes the base model, prompts and laid-out inputs as arguments; never the model.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from .scoring import cache_argument, output_cache

logger = logging.getLogger(__name__)

KV = list[tuple[Tensor, Tensor]]   # per layer: keys, values (batch, kv heads, length, head dim)


def unsupported_reason(base: nn.Module) -> str | None:
    """Why this decoder-only base cannot take a prompt cache, or None if it can."""
    accepted = inspect.signature(base.forward).parameters
    if "position_ids" not in accepted:
        return "its forward takes no position_ids, so input positions cannot continue after the prompt"
    if "cache" not in accepted and "past_key_values" not in accepted:
        return "its forward takes no KV cache"
    # Linear-attention and state-space layers keep no per-token keys to cache.
    kinds = set(getattr(_text_config(base), "layer_types", None) or ["full_attention"])
    if not kinds <= {"full_attention", "sliding_attention"}:
        return f"its layers are {sorted(kinds)}"
    return None


def _text_config(base: nn.Module):
    return base.config.get_text_config(decoder=True) if hasattr(base.config, "get_text_config") else base.config


def sliding_window(base: nn.Module) -> int | None:
    """The attention window, if any layer has one. Windows are counted in cache columns, and the
    shared layout has other columns than the laid-out row (pads sit between prompt and input),
    so the prompt is shared only while a whole row, M + T columns, fits inside the window."""
    return getattr(_text_config(base), "sliding_window", None) or None


def checkpointing(base: nn.Module) -> bool:
    """Activation checkpointing re-runs layers in backward, which would append to the cache twice.
    transformers >= 5.20 names it activation checkpointing; earlier ones (vLLM pins them), gradient."""
    if hasattr(base, "is_activation_checkpointing"):
        return bool(base.is_activation_checkpointing)
    return bool(getattr(base, "is_gradient_checkpointing", False))


def prompt_kv(base: nn.Module, prompt: Tensor) -> KV:
    """Keys and values of one soft prompt (1, m, d) at positions 0..m-1, per layer."""
    m = prompt.shape[1]
    positions = torch.arange(m, device=prompt.device).unsqueeze(0)            # (1, m)
    mask = torch.ones(1, m, dtype=torch.long, device=prompt.device)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
    out = base(inputs_embeds=prompt, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
    return [(layer.keys, layer.values) for layer in output_cache(out).layers]


def batched_cache(kvs: dict[str, KV], groups: dict[str, list[int]], lengths: dict[str, int],
                  batch_size: int, config) -> tuple[DynamicCache, Tensor]:
    """A DynamicCache whose row b holds its adapter's prompt KV right-aligned in M columns
    (left-padded with zeros that the mask hides), and that mask (B, M) long.

    kvs: adapter -> per-layer (1, H, m, hd); adapters with m = 0 may be absent. groups: adapter
    -> its rows. `expand` keeps one copy per adapter until the cat, and autograd sums the
    rows' gradients back onto the one prompt."""
    M = max(lengths.values())
    any_kv = next(iter(kvs.values()))
    n_layers = len(any_kv)
    device = any_kv[0][0].device
    order: list[int] = []
    per_layer: list[tuple[list[Tensor], list[Tensor]]] = [([], []) for _ in range(n_layers)]
    mask = torch.zeros(batch_size, M, dtype=torch.long, device=device)
    for name, rows in groups.items():
        m, n = lengths[name], len(rows)
        order += rows
        if m:
            mask[rows, M - m:] = 1
        for layer, (keys, values) in enumerate(kvs.get(name) or [(None, None)] * n_layers):
            if keys is None:  # m = 0: only masked zeros, shaped like any other adapter's
                ref_k, ref_v = any_kv[layer]
                keys = ref_k.new_zeros(1, ref_k.shape[1], M, ref_k.shape[3])
                values = ref_v.new_zeros(1, ref_v.shape[1], M, ref_v.shape[3])
            else:
                keys = nn.functional.pad(keys, (0, 0, M - m, 0))            # (1, H, M, hd)
                values = nn.functional.pad(values, (0, 0, M - m, 0))
            per_layer[layer][0].append(keys.expand(n, -1, -1, -1))
            per_layer[layer][1].append(values.expand(n, -1, -1, -1))
    # Rows were gathered group by group; put them back in batch order.
    inverse = torch.empty(batch_size, dtype=torch.long, device=device)
    inverse[torch.tensor(order, device=device)] = torch.arange(batch_size, device=device)
    single = len(groups) == 1
    data = []
    for keys, values in per_layer:
        k, v = (keys[0], values[0]) if single else (torch.cat(keys)[inverse], torch.cat(values)[inverse])
        data.append((k, v))
    return DynamicCache(ddp_cache_data=data, config=config), mask


class PromptCache:
    """Prompt keys/values kept between no-grad calls, per (adapter, device, dtype).

    An entry is valid while the prompt parameter is the same object at the same `_version`
    (in-place optimiser steps and `copy_` in load_tensors bump it); `drop(name)` on delete.
    Least recently used adapters are evicted once the entries exceed `max_bytes`."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple, tuple[tuple[int, int], KV, int]] = OrderedDict()
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(size for _, _, size in self.entries.values())

    def get(self, base: nn.Module, name: str, prompt: nn.Parameter, dtype: torch.dtype) -> KV:
        key = (name, prompt.device, dtype)
        stamp = (id(prompt), prompt._version)
        entry = self.entries.get(key)
        if entry is not None and entry[0] == stamp:
            self.hits += 1
            self.entries.move_to_end(key)
            return entry[1]
        self.misses += 1
        kv = prompt_kv(base, prompt.detach().to(dtype).unsqueeze(0))
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        self.entries[key] = (stamp, kv, size)
        self.entries.move_to_end(key)
        while len(self.entries) > 1 and self.nbytes > self.max_bytes:
            self.entries.popitem(last=False)
        return kv

    def drop(self, name: str) -> None:
        for key in [k for k in self.entries if k[0] == name]:
            del self.entries[key]

    def clear(self) -> None:
        self.entries.clear()


def shared_prefix_inputs(base: nn.Module, packed: dict[str, Tensor], prompts: dict[str, Tensor | None],
                         groups: dict[str, list[int]], store: PromptCache | None = None) -> dict:
    """Kwargs for the base: the packed input tokens against the batch's prompt cache.

    packed: the input laid out without prompts (inputs_embeds (B, T', d), attention_mask and
    position_ids (B, T') from 0, labels). prompts: adapter -> its prompt (m, d) or None.
    `store` is used only in eval mode with no gradient recorded; training recomputes."""
    B = packed["inputs_embeds"].shape[0]
    dtype = packed["inputs_embeds"].dtype
    lengths = {name: (0 if p is None else p.shape[0]) for name, p in prompts.items()}
    kvs: dict[str, KV] = {}
    for name, prompt in prompts.items():
        if prompt is None or prompt.shape[0] == 0:
            continue
        if store is not None and not torch.is_grad_enabled() and not base.training:
            kvs[name] = store.get(base, name, prompt, dtype)
        else:
            kvs[name] = prompt_kv(base, prompt.to(dtype).unsqueeze(0))
    cache, prompt_mask = batched_cache(kvs, groups, lengths, B, base.config)
    m_rows = prompt_mask.sum(dim=1, keepdim=True)                                # (B, 1) m of each row
    out = dict(packed)
    out["attention_mask"] = torch.cat([prompt_mask, packed["attention_mask"]], dim=1)  # (B, M + T')
    out["position_ids"] = packed["position_ids"] + m_rows                        # m_b, m_b + 1, ...
    out.update(cache_argument(base, cache))
    return out


def can_share(base: nn.Module, unsupported: str | None, M: int, width: int, *, training: bool) -> bool:
    """Share the prompt of a batch whose longest prompt is M, inputs `width` columns wide?
    `unsupported`: unsupported_reason(base), worked out once; said once in the log."""
    reason = unsupported or ("activation checkpointing re-runs layers" if training and checkpointing(base)
                             else None)
    if reason is not None:
        warn_unsupported_once(base, reason)
        return False
    window = sliding_window(base)
    return M > 0 and (window is None or M + width < window)


def warn_unsupported_once(base: nn.Module, reason: str, _seen: set = set()) -> None:  # noqa: B006
    """Say once per model class and reason why the prompt is not shared."""
    name = type(base).__name__
    if (name, reason) not in _seen:
        _seen.add((name, reason))
        logger.warning("dept: %s does not share the soft prompt across the batch (%s); "
                       "running the full laid-out sequence instead", name, reason)


def has_cache(kwargs: dict) -> bool:
    """The caller brought its own KV cache: leave the layout as it is."""
    return kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None
