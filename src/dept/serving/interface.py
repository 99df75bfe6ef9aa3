"""The engine interface: what the routes need of whatever runs the model.

The embedded engine (engine.py) implements it for every family, vLLM's (vllm_engine.py) for
decoder-only models through prompt embeddings; the routes, auth, limits, metrics and the drain
are the same for both. The routes import nothing else of an engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, Protocol

from .adapters import Served
from ..decoding import Row


class ServingEngine(Protocol):
    adapters: Mapping[str, Served]
    """The adapters served, by name (what a request's `model` names)."""

    # ----- life cycle and health ---------------------------------------------------------------
    def start(self) -> Any: ...
    def stop(self, timeout: float = 30.0) -> None: ...
    def depth(self) -> int:
        """Requests waiting (the queue-depth gauge, /health, and the load shedding)."""
    def idle(self) -> bool:
        """Nothing queued and nothing running (what a drain waits for)."""
    def close(self) -> None:
        """Admit no new work: submit raises ShuttingDown (503)."""
    def shed(self) -> None:
        """Answer everything queued or running with ShuttingDown."""

    # ----- adapters ---------------------------------------------------------------------------
    def load_adapter(self, name: str, path: Any) -> Served:
        """Read, check and attach an adapter folder (or an already read TrainedAdapter), between
        batches; 409 if the name is taken."""
    def delete_adapter(self, name: str) -> None:
        """Drop an adapter between batches; requests admitted for it are answered 404."""

    # ----- requests ---------------------------------------------------------------------------
    @property
    def family(self) -> Any:
        """The base model's family (families.Family): whether it generates, and so on."""
    @property
    def tokenizer(self) -> Any:
        """The base model's tokenizer, for prompts sent to the base model alone."""
    def classify(self, served: Served, sources: list[str]) -> Any:
        """Work that ranks the adapter's label words (or reads its head) for each source."""
    def generate(self, rows: list[Row]) -> Any:
        """Work that decodes each row; a row's on_text callback streams its text as it grows."""
    def submit(self, work: Any) -> Future:
        """Queue work: a future of one result per row; QueueFull (429) or ShuttingDown (503)."""
