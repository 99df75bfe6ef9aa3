"""Loading a trained adapter for evaluation or prediction: base model + adapter + collator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .data import Collator
from .model import DeptModel
from .trained import TrainedAdapter, read_trained


@dataclass
class Loaded:
    model: DeptModel
    collator: Collator
    adapter: TrainedAdapter
    """The adapter as read: its task (resolved), how its answers are read, its config."""


def load_trained(adapter_dir: str | Path, base_model: str | None = None, device: str | None = None) -> Loaded:
    """The adapter in `adapter_dir` on its base model (or `base_model` if given)."""
    trained = read_trained(adapter_dir)
    model = DeptModel.from_pretrained(trained.base_model(base_model), family=trained.base.get("model_family"))
    model.load_adapter(trained)
    if device:
        model.to(device)
    return Loaded(model, adapter_collator(model, trained.config), trained)


def adapter_collator(model: DeptModel, config) -> Collator:
    """The collator an adapter's inputs go through: its s, and truncation as its on_overflow says."""
    return Collator(model.tokenizer, model.family, config.max_length, truncate=config.on_overflow == "truncate")
