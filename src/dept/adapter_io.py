"""Adapter files: `adapter_config.json` + `adapter_model.safetensors`, in PEFT's layout.

`trained.read_trained` reads a folder whole through these functions and checks everything
(config fields, tensor names and shapes, then the base model) before touching a model, so a
refused adapter leaves the model exactly as it was.
No pickle anywhere: JSON and safetensors only (PEFT's and the reference code's folders are
read through interop.py, whose .bin files go through torch's weights-only loader). These
functions take the adapter and the facts of the base model as arguments.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from . import __version__, interop
from .adapter import DeptAdapter
from .config import FIELD_ALIASES, ConfigError, DeptConfig
from .errors import UserError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
METHOD = "dept"
# Fields describing the base model the adapter was trained on; checked at load.
BASE_FIELDS = ("base_model_name_or_path", "model_type", "model_family", "hidden_size", "vocab_size")
OTHER_FIELDS = ("method", "dept_version")
# Fields that change what an adapter computes: a file without one is refused, never
# completed with a default (a missing alpha would silently scale the update wrongly).
REQUIRED_FIELDS = ("prompt_length", "rank", "max_length", "alpha", "scaling", "on_overflow",
                   "num_labels", "head_pooling")


class AdapterFileError(UserError, ValueError):
    """An adapter folder is missing, corrupt, or does not fit the model it is loaded onto."""


def base_model_facts(base_model: nn.Module, family: str) -> dict:
    """What an adapter records of the model it was trained on (checked when it is loaded)."""
    config = base_model.config
    embeddings = base_model.get_input_embeddings()
    return {
        "base_model_name_or_path": getattr(config, "_name_or_path", "") or "",
        "model_type": config.model_type,
        "model_family": family,
        "hidden_size": embeddings.embedding_dim,
        "vocab_size": embeddings.num_embeddings,
    }


def save_adapter(directory: str | Path, adapter: DeptAdapter, base_facts: dict, **task_metadata) -> Path:
    """Write `adapter` to `directory`; `task_metadata` is merged into config.task."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = adapter.config.to_dict()
    config["task"] = {**config["task"], **task_metadata}
    record = {"method": METHOD, **config, **base_facts, "dept_version": __version__}
    tensors = {k: v.float().contiguous().cpu() for k, v in adapter.tensors().items()}
    # Write to temporary names, then rename: a crash mid-save never leaves half a file.
    (directory / (WEIGHTS_NAME + ".tmp")).unlink(missing_ok=True)
    save_file(tensors, str(directory / (WEIGHTS_NAME + ".tmp")), metadata={"format": "pt", "method": METHOD})
    (directory / (CONFIG_NAME + ".tmp")).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (directory / (WEIGHTS_NAME + ".tmp")).replace(directory / WEIGHTS_NAME)
    (directory / (CONFIG_NAME + ".tmp")).replace(directory / CONFIG_NAME)
    return directory


def read_adapter_config(directory: str | Path) -> tuple[DeptConfig, dict]:
    """Parse and validate `adapter_config.json`: (DeptConfig, base-model facts)."""
    path = Path(directory) / CONFIG_NAME
    if not Path(directory).is_dir():
        raise AdapterFileError(f"{directory}: no such adapter folder")
    if not path.is_file():
        raise AdapterFileError(f"{path}: missing (an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterFileError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(record, dict):
        raise AdapterFileError(f"{path}: expected a JSON object, got {type(record).__name__}")
    if interop.is_foreign(record):  # PEFT's prompt tuning or the reference DePT code
        return interop.foreign_config(record, Path(directory))
    if record.get("method") != METHOD:
        raise AdapterFileError(f"{path}: field 'method' is {record.get('method')!r}, expected {METHOD!r}")
    record = {FIELD_ALIASES.get(k, k): v for k, v in record.items()}
    config_fields = {f.name for f in fields(DeptConfig)}
    unknown = sorted(set(record) - config_fields - set(BASE_FIELDS) - set(OTHER_FIELDS))
    if unknown:
        raise AdapterFileError(f"{path}: unknown field(s) {unknown}")
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        raise AdapterFileError(f"{path}: missing required field(s) {missing}")
    base = {k: record[k] for k in BASE_FIELDS if k in record}
    try:
        config = DeptConfig.from_dict({k: v for k, v in record.items() if k in config_fields}, source=str(path))
    except (ConfigError, TypeError) as err:
        raise AdapterFileError(f"{path}: {err}") from err
    return config, base


def check_base(facts: dict, recorded: dict, path: Path) -> None:
    """Refuse a base model whose family, width or vocabulary differs from the one recorded."""
    for key in ("model_type", "model_family", "hidden_size", "vocab_size"):
        if key in recorded and recorded[key] != facts[key]:
            raise AdapterFileError(f"{path}: adapter was trained for {key}={recorded[key]!r}, "
                                   f"but the base model has {key}={facts[key]!r}")


def read_adapter_tensors(directory: Path, config: DeptConfig,
                         expected: dict[str, tuple[int, ...]]) -> dict[str, Tensor]:
    """The tensors of an adapter folder (dept's safetensors, or a foreign folder through interop.py),
    under dept's names, each checked against the shape its config implies."""
    foreign = _foreign_kind(directory)
    if foreign:
        tensors = interop.foreign_tensors(directory, config, foreign)
        source = directory
    else:
        source = directory / WEIGHTS_NAME
        tensors = _load_safetensors(source)
    if set(tensors) != set(expected):
        raise AdapterFileError(f"{source}: holds tensors {sorted(tensors)}, expected {sorted(expected)}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise AdapterFileError(f"{source}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                                   f"expected {shape} from the config")
    return tensors


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise AdapterFileError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise AdapterFileError(f"{path}: corrupt or not a safetensors file ({err})") from err


def _foreign_kind(directory: Path) -> str | None:
    """PEFT's peft_type of a foreign adapter folder (read_adapter_config has checked it), else None."""
    record = json.loads((directory / CONFIG_NAME).read_text())
    return record["peft_type"] if interop.is_foreign(record) else None
