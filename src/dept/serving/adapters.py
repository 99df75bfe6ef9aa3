"""The adapters a server holds: each one's task, collator and input rules, by name."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from ..data import Collator
from ..decoding import AdapterRef
from ..errors import UserError
from ..model import DeptModel
from ..inference import adapter_collator
from ..tasks import TaskMeta, TaskSpec, candidate_targets
from ..tasks.templates import format_source
from ..trained import TrainedAdapter


class RequestError(UserError):
    """A request the server refuses (HTTP 400/404/422), with the field it is about."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.param = param


@dataclass
class Served:
    name: str
    path: str
    meta: TaskMeta
    collator: Collator
    """Truncating collator with the adapter's s."""
    on_overflow: str
    prompt_length: int
    rank: int
    task: TaskSpec | None = None
    """The adapter's own task (a built-in row or the user's task it was trained on)."""
    ref: AdapterRef | None = None
    """The handle its request rows carry (set when the engine loads it)."""

    @property
    def candidates(self) -> list[str] | None:
        return candidate_targets(self.task, self.meta.target_words) if self.task else None

    def source(self, item: dict[str, Any] | str, where: str) -> str:
        """A classify input as the adapter's formatted source text."""
        if isinstance(item, str):
            return item
        if self.task is None:
            raise RequestError(f"{where}: adapter {self.name!r} names no task, so raw fields cannot be "
                               f"formatted; send the formatted text as a string", param="input")
        try:
            return format_source(self.task, item, where=where)
        except UserError as err:
            raise RequestError(str(err), param="input") from None

    def check_length(self, text: str, where: str) -> bool:
        """True when `text` is longer than s and will be truncated; raises under on_overflow='error'."""
        length = len(replace(self.collator, truncate=False).source_ids(text))
        if length <= self.collator.max_length:
            return False
        if self.on_overflow == "error":
            raise RequestError(f"{where}: {length} input tokens, more than adapter {self.name!r}'s max_length "
                               f"{self.collator.max_length}", param="input")
        return True


def describe(model: DeptModel, trained: TrainedAdapter, name: str, load_id: int = 0) -> Served:
    """The serving record of adapter `name`, already loaded on `model` from `trained`."""
    config = trained.config
    return Served(name, str(trained.path), trained.meta, replace(adapter_collator(model, config), truncate=True),
                  config.on_overflow, config.prompt_length, config.rank, trained.task,
                  AdapterRef(name, load_id, str(trained.path)))


class AdapterTable:
    """What both engines keep alike: the adapters served on one DeptModel, by name, each load with
    its own AdapterRef, and the base model's family and tokenizer. The engine decides when a change
    may happen (the embedded engine: on its worker, between batches; vLLM's: under a lock)."""

    def __init__(self, model: DeptModel):
        self.model = model.eval()
        self.adapters: dict[str, Served] = {}
        self._load_ids = itertools.count(1)  # each load's AdapterRef id

    @property
    def family(self):
        return self.model.family

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def _attach(self, name: str, trained: TrainedAdapter) -> Served:
        if name in self.adapters:
            raise RequestError(f"an adapter named {name!r} is already served", status=409, param="name")
        self.model.load_adapter(trained, adapter_name=name)
        self.adapters[name] = describe(self.model, trained, name, next(self._load_ids))
        return self.adapters[name]

    def _detach(self, name: str) -> None:
        if name not in self.adapters:
            raise RequestError(f"no adapter named {name!r}", status=404, param="name")
        del self.adapters[name]
        self.model.delete_adapter(name)

    def _removed(self, refs) -> RequestError | None:
        """404 for work admitted for an adapter that has been removed (or replaced) since."""
        gone = sorted(ref.name for ref in refs if ref.name not in self.adapters or self.adapters[ref.name].ref != ref)
        return RequestError(f"adapter {gone[0]!r} was removed", status=404, param="model") if gone else None
