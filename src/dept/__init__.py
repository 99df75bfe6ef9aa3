"""dept: Decomposed Prompt Tuning (Shi & Lipani, ICLR 2024) for Hugging Face models."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public names -> defining module. Imported on first use, so the command line starts
# without paying for torch where a command does not need it.
_EXPORTS = {
    "DeptConfig": "dept.config",
    "ConfigError": "dept.config",
    "DeptModel": "dept.model",
    "InputTooLongError": "dept.model",
    "solve_budget": "dept.budget",
    "Budget": "dept.budget",
    "AdapterFileError": "dept.adapter_io",
    "Collator": "dept.data",
    "evaluate": "dept.evaluation",
    "predict": "dept.evaluation",
    "TrainOptions": "dept.training.options",
    "train": "dept.training",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dept' has no attribute {name!r}")
