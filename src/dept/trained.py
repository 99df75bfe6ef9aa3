"""A trained adapter as one value: its tensors, its DeptConfig, its task and the facts of its base model.

    read_trained("runs/sst2/adapter")  -> TrainedAdapter
    model.load_adapter(trained, "sst2")   # checks the base model, then attaches a copy

`read_trained` is the one loader of adapter folders (dept's own, PEFT's prompt tuning and the
reference DePT code's): `dept eval`, `dept predict`, `dept serve` (and its hot loading),
`dept inspect`, `dept export` and `--init_from` all start from it. Everything is read and checked
against the adapter's own record before any model is touched.

The task travels with the adapter: a built-in task is a row of the (read-only) task table, a
user's own task is rebuilt from the description saved in the adapter. Nothing is registered in
process-wide state, so two adapters of two different custom tasks can live in one process.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from .adapter import DeptAdapter
from .adapter_io import AdapterFileError, check_base, read_adapter_config, read_adapter_tensors
from .config import ConfigError, DeptConfig
from .errors import UserError
from .tasks import TaskMeta, TaskSpec, candidate_targets
from .tasks.templates import format_source


@dataclass(frozen=True, eq=False)
class TrainedAdapter:
    path: Path
    """The folder it was read from."""
    config: DeptConfig
    """What it computes: m, r, s, the scale, the overflow rule, the head."""
    tensors: Mapping[str, Tensor]
    """File key -> tensor: prompt (m, d), lora_a (s, r), lora_b (r, d), head.weight (k, d), head.bias (k,)."""
    base: Mapping[str, Any]
    """The facts of the base model it was trained on, as recorded (adapter_io.BASE_FIELDS)."""
    meta: TaskMeta
    """How its answers are read and its splits rebuilt (decoder, target words, protocol, split seed)."""
    task: TaskSpec | None
    """Its task, resolved: a built-in row or the user's own task; None when it names none."""

    def base_model(self, override: str | None = None) -> str:
        """The base model to load it on: `override` (--model), else the one it records."""
        name = override or self.base.get("base_model_name_or_path")
        if not name:
            raise UserError(f"{self.path}: the adapter does not name its base model; pass --model")
        return name

    def check_base(self, facts: dict) -> None:
        """Refuse a base model other than the one it was trained for (family, width, vocabulary)."""
        check_base(facts, dict(self.base), self.path)

    def params(self) -> list[tuple[str, str, Tensor]]:
        """(role, name, tensor) in the order and with the roles `DeptAdapter.adapter_params()` lists."""
        return [(role, name, self.tensors[name]) for role, name, _ in _probe(self.config, self._width()).adapter_params()]

    def role(self, role: str) -> list[Tensor]:
        """The tensors of one role: [P] for prompt, [A, B] for lowrank, [] where it has none."""
        return [tensor for r, _, tensor in self.params() if r == role]

    def fresh_config(self) -> DeptConfig:
        """A copy of the config for a model to own (training a transfer changes its task and head)."""
        return copy.deepcopy(self.config)

    @property
    def candidates(self) -> list[str] | None:
        """The label words rank classification chooses from; None for other kinds of task."""
        return candidate_targets(self.task, self.meta.target_words) if self.task else None

    @property
    def score_range(self) -> tuple[float, float] | None:
        """A regression task's score scale (the head's outputs are clipped to it)."""
        return self.task.score_range if self.task is not None and self.task.kind == "regression" else None

    def source(self, record: dict, where: str) -> str:
        """A record of raw fields as this adapter's formatted input text."""
        if self.task is None:
            raise UserError(f"{where}: raw fields need the adapter's task, and adapter {self.path} names none; "
                            f"give the formatted input text instead")
        return format_source(self.task, record, where=where)

    def _width(self) -> int:
        return int(self.base["hidden_size"])


def read_trained(directory: str | Path) -> TrainedAdapter:
    """Read and check an adapter folder: its config, its tensors' names and shapes, its task."""
    path = Path(directory)
    config, base = read_adapter_config(path)
    if not isinstance(base.get("hidden_size"), int):
        raise AdapterFileError(f"{path}: its config records no integer hidden_size, so its tensors cannot be checked")
    tensors = read_adapter_tensors(path, config, _probe(config, base["hidden_size"], path).expected_shapes())
    try:
        meta = TaskMeta.from_dict(dict(config.task))
        task = meta.spec()
    except UserError as err:
        raise AdapterFileError(f"{path}: its task record: {err}") from None
    return TrainedAdapter(path, config, tensors, base, meta, task)


def _probe(config: DeptConfig, hidden_size: int, path: Path | None = None) -> DeptAdapter:
    """An unattached adapter of the config's shapes: the one list of tensor names, shapes and roles."""
    try:
        return DeptAdapter(copy.deepcopy(config), hidden_size)
    except ConfigError as err:
        raise AdapterFileError(f"{path}: {err}") from err
