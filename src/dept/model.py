"""DeptModel: a frozen Hugging Face model with one or more DePT adapters attached.

The whole method happens on the input embeddings, before the frozen model runs:

    W  = embed(input_ids)                          (B, T, d)
    W' = W + scale·(A·B)[position of each token]   row i of A·B -> i-th real input token
    X  = [P_s ; W'] laid out per row               (B, N, d), N <= T + m
    out = base_model(inputs_embeds=X, ...)

so one code path serves encoder-decoder, decoder-only and encoder models; what differs
per family is data (see families.py). Each adapter lists its own tensors with their
roles (`DeptAdapter.adapter_params`); training, checkpoints and files read that list.

Imports point one way: this module uses the method (config, adapter, layout, families)
and calls the lower helpers for scoring, adapter files and base-model loading, which
take what they need as arguments and never import the model.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from transformers.modeling_outputs import SequenceClassifierOutput

from . import adapter_io, decoding, prefix, scoring
from .adapter import DeptAdapter
from .config import DeptConfig
from .data import pad_id
from .errors import UserError
from .families import Family, get_family
from .head import head_logits, head_loss
from .layout import group_rows, insert_prompts, real_token_positions
from .pretrained import load_base
from .scoring import target_window
from .trained import TrainedAdapter, read_trained

DEFAULT_ADAPTER = "default"


class InputTooLongError(UserError, ValueError):
    """An input has more real tokens than the adapter's max_length and on_overflow='error'."""


class DeptModel(nn.Module):
    def __init__(self, base_model: nn.Module, config: DeptConfig | None = None, *,
                 tokenizer=None, family: str | None = None, adapter_name: str = DEFAULT_ADAPTER,
                 share_prefix: bool = True):
        super().__init__()
        self.base_model = base_model
        self.base_model.requires_grad_(False)
        self.family: Family = get_family(family or base_model.config)
        self.tokenizer = tokenizer
        self.dept_adapters = nn.ModuleDict()
        self.active_adapter: str | None = None
        accepted = inspect.signature(base_model.forward).parameters
        self._passes_position_ids = "position_ids" in accepted
        self._keeps_logits = "logits_to_keep" in accepted
        # Decoder-only: run each adapter's prompt once per batch, not once per row (prefix.py).
        self.share_prefix = share_prefix
        self._prefix_unsupported = prefix.unsupported_reason(base_model) if self.family.prompt_shared else None
        self.prompt_cache = prefix.PromptCache()   # prompt KV kept between no-grad calls
        if config is not None:
            self.add_adapter(adapter_name, config)

    # ----- construction -------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, config: DeptConfig | None = None, *,
                        family: str | None = None, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None, **load_kwargs) -> "DeptModel":
        """Load a base model and its tokenizer by hub name, local folder or packaged alias."""
        base, tokenizer, fam = load_base(name_or_path, family=family, dtype=dtype, **load_kwargs)
        model = cls(base, config, tokenizer=tokenizer, family=fam.name)
        return model.to(device) if device is not None else model

    @property
    def hidden_size(self) -> int:
        return self.base_model.get_input_embeddings().embedding_dim

    @property
    def device(self) -> torch.device:
        return self.base_model.get_input_embeddings().weight.device

    # ----- adapters -----------------------------------------------------------------
    def add_adapter(self, name: str, config: DeptConfig, *, initialise: bool = True) -> DeptAdapter:
        """Create adapter `name`, make it active and trainable. Raises if the name is taken."""
        if name in self.dept_adapters:
            raise ValueError(f"an adapter named {name!r} is already loaded; delete it first")
        if self.family.has_head and not config.num_labels:
            raise ValueError(f"{self.family.name} models need DeptConfig.num_labels for the trainable head")
        if not self.family.has_head and config.num_labels:
            raise ValueError(f"num_labels is for encoder models; this is a {self.family.name} model")
        adapter = DeptAdapter(config, self.hidden_size)
        if initialise:
            adapter.initialise(self.base_model.get_input_embeddings(), self._init_token_ids(config))
        weight = self.base_model.get_input_embeddings().weight
        self.dept_adapters[name] = adapter.to(device=weight.device)
        self.set_active_adapter(name)
        return adapter

    def _init_token_ids(self, config: DeptConfig) -> list[int] | None:
        if config.prompt_init != "text" or not config.prompt_length or self.tokenizer is None:
            return None
        return self.tokenizer(config.init_text, add_special_tokens=False)["input_ids"]

    def delete_adapter(self, name: str) -> None:
        del self.dept_adapters[self._check_name(name)]
        self.prompt_cache.drop(name)
        if self.active_adapter == name:
            self.active_adapter = None
            if self.dept_adapters:  # the next adapter becomes active, and so trainable
                self.set_active_adapter(next(iter(self.dept_adapters)))

    def set_active_adapter(self, name: str) -> None:
        """Make `name` the adapter used when rows name none; only its tensors train."""
        self._check_name(name)
        self.active_adapter = name
        for adapter_name, adapter in self.dept_adapters.items():
            adapter.requires_grad_(adapter_name == name)

    def _check_name(self, name: str) -> str:
        if name not in self.dept_adapters:
            raise KeyError(f"no adapter named {name!r}; loaded: {sorted(self.dept_adapters)}")
        return name

    @property
    def adapter_names(self) -> list[str]:
        return list(self.dept_adapters)

    def adapter_state_dict(self, name: str | None = None) -> dict[str, Tensor]:
        """The tensors of one adapter (names relative to it: prompt, lora_a, lora_b, head.*)."""
        return self.dept_adapters[self._check_name(name or self.active_adapter)].tensors()

    def adapter_params(self) -> list[tuple[str, str, nn.Parameter]]:
        """(role, name, parameter) of everything that trains: the active adapter's tensors,
        named as in named_parameters() (dept_adapters.<adapter>.<tensor>)."""
        if self.active_adapter is None:
            return []
        prefix = f"dept_adapters.{self.active_adapter}."
        return [(role, prefix + name, p)
                for role, name, p in self.dept_adapters[self.active_adapter].adapter_params()]

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of adapter_params(): what checkpoints hold and optimisers step."""
        return [(name, p) for _, name, p in self.adapter_params()]

    def base_facts(self) -> dict:
        """What adapter files record of the base model, and check when loaded onto it."""
        return adapter_io.base_model_facts(self.base_model, self.family.name)

    # ----- the method ---------------------------------------------------------------
    def _row_adapters(self, batch_size: int, adapter_names: Sequence[str] | None) -> list[str]:
        if adapter_names is None:
            if self.active_adapter is None:
                raise ValueError("no adapter is loaded: add_adapter() or load_adapter() first")
            return [self.active_adapter] * batch_size
        if len(adapter_names) != batch_size:
            raise ValueError(f"adapter_names has {len(adapter_names)} entries for a batch of {batch_size}")
        for name in set(adapter_names):
            self._check_name(name)
        return list(adapter_names)

    def prepare_inputs(self, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                       labels: Tensor | None = None, source_mask: Tensor | None = None,
                       adapter_names: Sequence[str] | None = None, left_pad: bool | None = None,
                       token_type_ids: Tensor | None = None, shared: bool = False) -> dict[str, Tensor]:
        """Embed, add the low-rank update by position, insert the prompts: kwargs for the base.
        `shared` (decoder-only, see uses_shared_prefix): the prompts come as a KV cache run once
        per adapter, and the rest (labels included) is laid out for the input tokens alone.

        input_ids, attention_mask, labels, source_mask, token_type_ids: (B, T). source_mask
        marks the input segment that receives the update (decoder-only: the source, not the
        target); by default every attended token that is not a label is source.
        """
        B, T = input_ids.shape
        device = input_ids.device
        attention = (torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None
                     else attention_mask.bool())
        if source_mask is None:
            source = attention & (labels == -100) if (self.family.labels_in_input and labels is not None) \
                else attention
        else:
            source = source_mask.bool() & attention
        row_adapters = self._row_adapters(B, adapter_names)
        groups = group_rows(row_adapters)

        positions = real_token_positions(source)                     # (B, T), -1 off-source
        max_len = torch.tensor([self.dept_adapters[a].config.max_length for a in row_adapters],
                               device=device).unsqueeze(1)           # (B, 1)
        overflow = positions >= max_len                              # (B, T)
        if overflow.any():
            self._handle_overflow(overflow, source, row_adapters)
        keep = attention & ~overflow

        embeds = self.base_model.get_input_embeddings()(input_ids)   # (B, T, d)
        prompts, embeds = self._apply_adapters(embeds, groups, positions, overflow)

        lengths = torch.tensor([self.dept_adapters[a].prompt_length for a in row_adapters],
                               device=device)
        if left_pad is None:
            left_pad = self.family.default_padding_side == "left"
        if shared:
            lengths, prompts = torch.zeros_like(lengths), prompts[:, :0]
        out = insert_prompts(embeds, keep, prompts, lengths, prompt_offset=self.family.prompt_offset,
                             left_pad=left_pad, labels=labels if self.family.labels_in_input else None,
                             token_type_ids=token_type_ids)
        if shared:
            row_prompts = {a: self.dept_adapters[a].prompt for a in groups}
            out = prefix.shared_prefix_inputs(self.base_model, out, row_prompts, groups, store=self.prompt_cache)
        if not self._passes_position_ids:
            out.pop("position_ids")
        out["row_adapters"] = row_adapters
        return out

    def _apply_adapters(self, embeds: Tensor, groups: dict[str, list[int]], positions: Tensor,
                        overflow: Tensor) -> tuple[Tensor, Tensor]:
        """(prompts (B, M, d), embeds + scale·A·B by position (B, T, d)) for the rows of each adapter."""
        B, _, d = embeds.shape
        M = max(self.dept_adapters[a].prompt_length for a in groups)
        # Off-source and overflow positions read an all-zero row s of the padded table.
        off = overflow | (positions < 0)                              # (B, T)
        if len(groups) == 1:
            # One adapter for the whole batch (the usual case): no zero-filled buffers and
            # no per-group scatter; their copies were ~1 ms of a T5-small step, a third of
            # the input work.
            adapter = self.dept_adapters[next(iter(groups))]
            prompts = (adapter.prompt.to(embeds.dtype).expand(B, M, d) if adapter.prompt is not None
                       else embeds.new_zeros(B, 0, d))
            table = adapter.lowrank_table()                          # (s, d) or None
            if table is not None:
                pos = positions.masked_fill(off, table.shape[0])
                embeds = embeds + F.embedding(pos, F.pad(table, (0, 0, 0, 1))).to(embeds.dtype)
            return prompts, embeds
        prompts = embeds.new_zeros(B, M, d)
        update = torch.zeros_like(embeds)
        for name, rows in groups.items():
            adapter = self.dept_adapters[name]
            index = torch.tensor(rows, device=embeds.device)
            if adapter.prompt is not None:
                m = adapter.prompt_length
                row_prompts = adapter.prompt.to(embeds.dtype).expand(len(rows), m, d)
                prompts = prompts.index_copy(0, index, F.pad(row_prompts, (0, 0, 0, M - m)))
            table = adapter.lowrank_table()                          # (s, d) or None
            if table is not None:
                pos = positions[index].masked_fill(off[index], table.shape[0])
                padded_table = F.pad(table, (0, 0, 0, 1))             # (s + 1, d)
                update = update.index_copy(0, index, F.embedding(pos, padded_table).to(embeds.dtype))
        return prompts, embeds + update

    def uses_shared_prefix(self, adapter_names: Sequence[str] | None = None, width: int = 0,
                           **base_kwargs) -> bool:
        """Whether a call on inputs `width` columns wide runs the prompts once per adapter (prefix.py)."""
        if not self.share_prefix or not self.family.prompt_shared or prefix.has_cache(base_kwargs):
            return False
        names = set(adapter_names) if adapter_names is not None else {self.active_adapter}
        M = max((self.dept_adapters[a].prompt_length for a in names if a in self.dept_adapters), default=0)
        return prefix.can_share(self.base_model, self._prefix_unsupported, M, width, training=self.training)

    def _handle_overflow(self, overflow: Tensor, source: Tensor, row_adapters: list[str]) -> None:
        for row in overflow.any(dim=1).nonzero().flatten().tolist():
            config = self.dept_adapters[row_adapters[row]].config
            if config.on_overflow == "error":
                raise InputTooLongError(
                    f"row {row} has {int(source[row].sum())} input tokens but adapter "
                    f"{row_adapters[row]!r} has max_length={config.max_length}; truncate the input, "
                    f"or set on_overflow='truncate'")

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                *, source_mask: Tensor | None = None, adapter_names: Sequence[str] | None = None,
                token_type_ids: Tensor | None = None, trim_logits: bool = False, **base_kwargs):
        """Run the base model with DePT applied. `trim_logits` (decoder-only, with labels):
        compute vocabulary logits only at target positions (same loss, less compute). Seq2seq models take decoder_input_ids /
        labels as usual; decoder-only labels are (B, T) aligned with input_ids (-100 on the
        source); encoder labels are (B,) class indices or float scores. token_type_ids (a BERT
        tokenizer's segments) are laid out with the prompt, so `model(**tokenizer(...))` works."""
        shared = self.uses_shared_prefix(adapter_names, input_ids.shape[1], **base_kwargs)
        prepared = self.prepare_inputs(input_ids, attention_mask, labels=labels, source_mask=source_mask,
                                       adapter_names=adapter_names, token_type_ids=token_type_ids, shared=shared)
        row_adapters = prepared.pop("row_adapters")
        if shared:
            base_kwargs.pop("use_cache", None)  # the prompt cache is passed; nothing else is kept
        if self.family.has_head:
            return self._encoder_forward(prepared, labels, row_adapters, **base_kwargs)
        if labels is not None and not self.family.labels_in_input:
            prepared["labels"] = labels
        if trim_logits and labels is not None and self.family.labels_in_input and self._keeps_logits:
            return self._causal_forward_on_targets(prepared, **base_kwargs)
        return self.base_model(**prepared, **base_kwargs)

    def _causal_forward_on_targets(self, prepared: dict[str, Tensor], **base_kwargs):
        """Decoder-only loss with vocabulary logits only where a target is predicted.

        Rows are left-padded, so targets end every row: the last k positions cover them.
        Projecting only those onto the vocabulary (49k rows for SmolLM2) saves that matmul
        and its (B, N, V) activation everywhere else. Returns logits (B, k, V).
        """
        labels = prepared.pop("labels")                                  # (B, N)
        N = labels.shape[1]
        k = target_window(labels)
        out = self.base_model(**prepared, logits_to_keep=k, **base_kwargs)
        logits = out.logits[:, :-1]                                      # (B, k-1, V) predict the next token
        targets = labels[:, N - k + 1:]                                  # (B, k-1)
        out.loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return out

    def _encoder_forward(self, prepared: dict[str, Tensor], labels: Tensor | None,
                         row_adapters: list[str], **base_kwargs) -> SequenceClassifierOutput:
        hidden = self.base_model(**prepared, **base_kwargs).last_hidden_state  # (B, N, d)
        logits = head_logits(hidden, prepared["attention_mask"], row_adapters, self.dept_adapters,
                             self.family.prompt_offset)                          # (B, num_labels)
        loss = head_loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    # ----- scoring (scoring.py does the arithmetic) -------------------------------------
    @torch.no_grad()
    def score(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
              *, source_mask: Tensor | None = None, adapter_names: Sequence[str] | None = None) -> Tensor:
        """(B,) summed log-likelihood of each row's labelled target tokens: rank classification."""
        prepared = self.prepare_inputs(input_ids, attention_mask, labels=labels, source_mask=source_mask,
                                       adapter_names=adapter_names,
                                       shared=self.uses_shared_prefix(adapter_names, input_ids.shape[1]))
        prepared.pop("row_adapters")
        return scoring.score_targets(self.base_model, prepared, labels, labels_in_input=self.family.labels_in_input,
                                     keeps_logits=self._keeps_logits)

    @torch.no_grad()
    def score_candidates(self, input_ids: Tensor, attention_mask: Tensor | None,
                         candidates: Sequence[Sequence[int]], *,
                         adapter_names: Sequence[str] | None = None) -> Tensor:
        """(B, C) log-likelihood of each candidate's token ids after each input (B, T), the
        source encoded once and shared by every candidate."""
        if not self.family.generates:
            raise ValueError(f"{self.family.name} models classify with their head; nothing to score")
        prepared = self.prepare_inputs(input_ids, attention_mask, adapter_names=adapter_names,
                                       left_pad=True if self.family.labels_in_input else None,
                                       shared=self.uses_shared_prefix(adapter_names, input_ids.shape[1]))
        prepared.pop("row_adapters")
        return scoring.score_candidates(self.base_model, prepared, candidates,
                                        labels_in_input=self.family.labels_in_input,
                                        keeps_logits=self._keeps_logits)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                 adapter_names: Sequence[str] | None = None, **generate_kwargs) -> Tensor:
        """Generate with the prompt and update applied once, at prefill; later steps reuse
        the KV cache. Returns only the new tokens, (B, new). Decoder-only models decode through
        dept.decoding (the server's path too); seq2seq models through Hugging Face's generate,
        whose rows start with the decoder's start token."""
        if not self.family.generates:
            raise ValueError(f"{self.family.name} models classify; they do not generate")
        pad = pad_id(self.tokenizer) if self.tokenizer is not None else self.base_model.config.pad_token_id
        if self.family.labels_in_input:
            return decoding.generate_tensor(self, input_ids, attention_mask, adapter_names, pad or 0,
                                            **generate_kwargs)
        prepared = self.prepare_inputs(input_ids, attention_mask, adapter_names=adapter_names, shared=False)
        prepared.pop("row_adapters")
        prepared.pop("position_ids", None)  # generate() derives them from the attention mask
        generate_kwargs.setdefault("pad_token_id", pad)
        return self.base_model.generate(**prepared, **generate_kwargs)

    # ----- adapter files (adapter_io.py reads and writes them) ------------------------
    def save_adapter(self, directory, adapter_name: str | None = None, **metadata) -> None:
        """Write one adapter (default: the active one); `metadata` is merged into its task record."""
        adapter = self.dept_adapters[self._check_name(adapter_name or self.active_adapter)]
        adapter_io.save_adapter(directory, adapter, self.base_facts(), **metadata)

    def load_adapter(self, adapter, adapter_name: str = DEFAULT_ADAPTER) -> DeptAdapter:
        """Add a trained adapter (a `TrainedAdapter`, or its folder) as `adapter_name`, made active.
        Everything is checked before the model is touched, so a refused adapter leaves it as it was."""
        if adapter_name in self.dept_adapters:
            raise adapter_io.AdapterFileError(f"an adapter named {adapter_name!r} is already loaded")
        trained = adapter if isinstance(adapter, TrainedAdapter) else read_trained(adapter)
        trained.check_base(self.base_facts())
        attached = self.add_adapter(adapter_name, trained.fresh_config(), initialise=False)
        attached.load_tensors(dict(trained.tensors))
        return attached
