"""The four methods `dept train` knows, behind one small interface.

Everything the loop needs from a model:
    model(**batch).loss                  training loss
    model.score(**batch) -> (B,)         target log-likelihood, for rank classification
    model.generate(input_ids, attention_mask, **kw) -> new tokens only
    model.adapter_params()               (role, name, parameter) of what trains
    model.trainable_parameters()         (name, parameter) of the same
    param_groups(model, options, rms)    AdamW groups, one per role, with their learning rates
    save_trained(model, directory, meta) the artefact users keep

DePT and PT are DeptModel (PT is r = 0). LoRA goes through PEFT, full fine-tuning
trains every weight; both are wrapped by `HFTunable` so the loop has no branches.
"""

from __future__ import annotations

import logging
import math
from dataclasses import fields
from pathlib import Path

import torch
from torch import Tensor, nn

from ..adapter import received_rms
from ..budget import round_prompt, solve_budget, trainable_params
from ..config import DeptConfig
from ..families import Family
from ..model import DeptModel
from ..scoring import target_log_likelihood
from .options import LOWRANK_LR_PER_RMS, PROMPT_LR_PER_RMS, TrainOptions
from .outputs import record_outputs

log = logging.getLogger("dept")

# Default learning rate of the baselines' trained weights when --learning_rate is not given.
BASELINE_LR = {"lora": 5e-4, "full": 5e-5}
# Optimiser groups in this order (a fixed order keeps optimiser state files comparable).
GROUP_ORDER = ("prompt", "lowrank", "lora", "full", "head")


def embedding_rms(model: nn.Module) -> float:
    """The scale the rates are relative to: the input embeddings as the model receives them."""
    return received_rms(model.get_input_embeddings())


def resolve_learning_rates(options: TrainOptions, rms: float) -> tuple[float, float]:
    """(prompt lr, low-rank lr): the given values, else the scale-aware defaults."""
    given = options.optimiser
    prompt_lr = given.learning_rate if given.learning_rate is not None else PROMPT_LR_PER_RMS * rms
    lowrank_lr = given.lowrank_lr if given.lowrank_lr is not None else LOWRANK_LR_PER_RMS * rms
    return prompt_lr, lowrank_lr


def dept_config(options: TrainOptions, hidden_size: int, num_labels: int | None, task_meta: dict) -> DeptConfig:
    """m and r from the options; the one not given is solved from the vanilla budget. The other
    fields DeptConfig shares with the adapter group are taken by name."""
    adapter, l, s = options.adapter, options.adapter.vanilla_length, options.adapter.max_length
    k = adapter.prompt_multiple
    if options.run.method == "pt":
        m, r = round_prompt(adapter.prompt_length or l, k), 0
    elif adapter.rank is not None:
        r = adapter.rank
        m = round_prompt(adapter.prompt_length, k) if adapter.prompt_length is not None else solve_budget(
            l, s, hidden_size, rank=r, prompt_multiple=k).prompt_length
    else:
        m = adapter.prompt_length if adapter.prompt_length is not None else 60
        shape = solve_budget(l, s, hidden_size, prompt_length=m, prompt_multiple=k)
        m, r = shape.prompt_length, shape.rank
    if options.run.method == "dept" and adapter.rank is not None and adapter.prompt_length is not None:
        # Both given: the budget is not solved, so say where the shape lands against it.
        used, budget = trainable_params(m, r, s, hidden_size), l * hidden_size
        where = "on" if used == budget else "over" if used > budget else "under"
        log.info("prompt_length %d and rank %d give %s trainable parameters, %s the budget of vanilla_length "
                 "%d (%s)", m, r, f"{used:,}", where, l, f"{budget:,}")
    shared = {f.name: getattr(adapter, f.name) for f in fields(DeptConfig)
              if f.name in type(adapter).model_fields and f.name not in ("prompt_length", "rank")}
    return DeptConfig(prompt_length=m, rank=r, num_labels=num_labels, seed=options.run.seed, task=task_meta, **shared)


# Where AutoModelForSequenceClassification keeps its freshly initialised head (PEFT's
# SEQ_CLS modules_to_save lists the same two).
HF_HEAD_NAMES = ("classifier", "score")


class HFTunable(nn.Module):
    """A plain or PEFT-wrapped Hugging Face model with DeptModel's loop-facing methods."""

    def __init__(self, model: nn.Module, family: Family, tokenizer, method: str):
        super().__init__()
        self.model = model
        self.family = family
        self.tokenizer = tokenizer
        self.method = method

    def adapter_params(self) -> list[tuple[str, str, nn.Parameter]]:
        """(role, name, parameter) of what trains: an encoder's fresh classification head is
        role 'head' (it trains at head_lr, as DePT's does), everything else role `method`."""
        return [("head" if self.family.has_head and any(part in HF_HEAD_NAMES for part in name.split("."))
                 else self.method, name, p) for name, p in self.named_parameters() if p.requires_grad]

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(name, p) for _, name, p in self.adapter_params()]

    def forward(self, input_ids, attention_mask=None, labels=None, source_mask=None, trim_logits=False,
                **kwargs):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)

    @torch.no_grad()
    def score(self, input_ids, attention_mask=None, labels=None, source_mask=None) -> Tensor:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            **({} if self.family.labels_in_input else {"labels": labels})).logits
        return target_log_likelihood(logits, labels, shifted=self.family.labels_in_input)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, **kwargs) -> Tensor:
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        out = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return out[:, input_ids.shape[1]:] if self.family.labels_in_input else out


def build_model(options: TrainOptions, num_labels: int | None, task_meta: dict):
    """(model, tokenizer, family, hidden-state RMS of the embeddings) for options.run.method."""
    from ..pretrained import load_base, load_config, load_tokenizer, resolve

    if options.run.method in ("dept", "pt"):
        base, tokenizer, family = load_base(options.run.model_name_or_path)
        model = DeptModel(base, tokenizer=tokenizer, family=family.name, share_prefix=not options.run.no_share_prefix)
        if options.adapter.init_from:
            adapter = model.load_adapter(options.adapter.init_from)  # transfer: the source task's adapter
            adapter.config.task = task_meta
            if family.has_head and num_labels and adapter.config.num_labels != num_labels:
                adapter.replace_head(num_labels, options.run.seed)
        else:
            head = num_labels if family.has_head else None  # generative models read text, not a head
            config = dept_config(options, model.hidden_size, head, task_meta)
            model.add_adapter("default", config)
        return model, tokenizer, family, embedding_rms(base)

    from transformers import AutoModelForSequenceClassification

    from ..families import get_family

    path = resolve(options.run.model_name_or_path)
    family = get_family(load_config(path))
    tokenizer = load_tokenizer(path, family)
    if family.has_head:
        kwargs = {"num_labels": num_labels}
        if num_labels == 1:
            kwargs["problem_type"] = "regression"
        base = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    else:
        base = family.auto_class.from_pretrained(path)
    if base.config.pad_token_id is None:
        base.config.pad_token_id = tokenizer.pad_token_id
    rms = embedding_rms(base)
    if options.run.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        task_type = {"seq2seq": TaskType.SEQ_2_SEQ_LM, "causal": TaskType.CAUSAL_LM,
                     "encoder": TaskType.SEQ_CLS}[family.name]
        base = get_peft_model(base, LoraConfig(task_type=task_type, r=options.adapter.lora_baseline_rank,
                                               lora_alpha=options.adapter.lora_baseline_alpha, lora_dropout=0.0))
    return HFTunable(base, family, tokenizer, options.run.method), tokenizer, family, rms


def param_groups(model: nn.Module, options: TrainOptions, rms: float) -> list[dict]:
    """AdamW groups, one per role of model.adapter_params(), each at its own rate. DePT: prompt,
    lowrank, head; LoRA and full: the body and an encoder's fresh head. Weight decay is applied
    to every group (the reference code passed it nowhere)."""
    listed = model.adapter_params()
    if not listed:
        raise ValueError("nothing to train: no parameter requires grad")
    prompt_lr, lowrank_lr = resolve_learning_rates(options, rms)
    body_lr = options.optimiser.learning_rate if options.optimiser.learning_rate is not None else BASELINE_LR.get(options.run.method)
    # An encoder's classification head starts from random; at the body's rate it barely
    # moves in a CPU-sized budget (MiniLM/SST-2, 50 steps: chance), so every method's head
    # gets head_lr and the baselines are not handicapped.
    rates = {"prompt": prompt_lr, "lowrank": lowrank_lr, "head": options.optimiser.head_lr,
             "lora": body_lr, "full": body_lr}
    by_role: dict[str, list] = {}
    for role, _, param in listed:
        by_role.setdefault(role, []).append(param)
    return [{"name": role, "params": params, "lr": rates[role], "weight_decay": options.optimiser.weight_decay}
            for role, params in sorted(by_role.items(), key=lambda item: GROUP_ORDER.index(item[0]))]


def save_trained(model: nn.Module, directory: Path, task_meta: dict) -> None:
    """DePT/PT: adapter files; LoRA: PEFT's adapter files; full: the whole model."""
    if isinstance(model, DeptModel):
        model.save_adapter(directory, **task_meta)
    else:
        before = {p.name for p in directory.iterdir()}
        model.model.save_pretrained(directory)
        model.tokenizer.save_pretrained(directory)
        # Names not known in advance: listed in the run's marker so an overwrite removes them.
        record_outputs(directory, sorted({p.name for p in directory.iterdir()} - before))


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for _, p in model.trainable_parameters())


def warmup_steps(options: TrainOptions) -> int:
    if options.optimiser.warmup_steps is not None:
        return options.optimiser.warmup_steps
    return math.ceil(0.06 * options.optimiser.max_steps)
