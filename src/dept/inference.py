"""Loading a trained adapter for evaluation or prediction: base model + adapter + collator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .adapter_io import read_adapter_config
from .data import Collator
from .model import DeptModel
from .tasks import TaskMeta
from .tasks.custom import register_described


@dataclass
class Loaded:
    model: DeptModel
    collator: Collator
    task: TaskMeta
    """What the adapter records of its task (name, target words, decoder, split protocol)."""


def load_trained(adapter_dir: str | Path, base_model: str | None = None, device: str | None = None) -> Loaded:
    """The adapter in `adapter_dir` on its base model (or `base_model` if given)."""
    config, base = read_adapter_config(adapter_dir)
    meta = TaskMeta.from_dict(config.task)
    register_described(meta.custom)  # a user's own task is read as training read it
    name = base_model or base.get("base_model_name_or_path")
    if not name:
        raise ValueError(f"{adapter_dir}: the adapter does not name its base model; pass --model")
    model = DeptModel.from_pretrained(name, family=base.get("model_family"))
    model.load_adapter(adapter_dir)
    if device:
        model.to(device)
    return Loaded(model, adapter_collator(model, config), meta)


def adapter_collator(model: DeptModel, config) -> Collator:
    """The collator an adapter's inputs go through: its s, and truncation as its on_overflow says."""
    return Collator(model.tokenizer, model.family, config.max_length, truncate=config.on_overflow == "truncate")
