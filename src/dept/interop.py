"""Other programs' prompt adapters, read as dept adapters; dept's prompt-tuning adapters written for PEFT.

Two foreign layouts are read (adapter_config.json carries `peft_type`):

    PROMPT_TUNING       PEFT's vanilla prompt tuning. adapter_model.safetensors (or .bin) holds
                        `prompt_embeddings` (m x d). Read as rank 0.
    PROMPT_TUNING_LORA  the DePT reference code (ZhengxiangShi/DePT, on its vendored PEFT 0.4.0.dev0).
                        adapter_model.bin holds `prompt_embeddings` (m x d),
                        `prompt_encoder.lora_embedding_A` (s x r) and
                        `prompt_encoder.lora_embedding_B` (r x d); its scale is
                        lora_alpha / sqrt(r) (scaling 'sqrt'), and s is its `max_length`.

The reference adds row i of A·B to column i of inputs padded on the right to s; dept adds it
to the i-th real token, which is the same token for right-padded rows and leaves pads alone
(they are masked anyway). That holds for its encoder-decoder (SEQ_2_SEQ_LM) checkpoints only:
for decoder-only ones (CAUSAL_LM) it left-pads every row to s and adds A·B to every column,
pads and answer tokens included, so token j of n reads row s-n+j. Such a folder would load and
compute something else, so it is refused. `.bin` files are read with `torch.load(weights_only=True)` only:
anything but a flat dict of tensors is refused, and nothing is ever fully unpickled.

Written: a rank-0 dept adapter of a causal or encoder-decoder model as a PEFT PROMPT_TUNING
folder that `PeftModel.from_pretrained(base, folder)` loads. An r > 0 adapter cannot be
written that way: PEFT's prompt tuning has no position-wise update of the input embeddings.

Layer 2: takes configs, tensors and base-model facts as arguments; imports no model code.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import __version__
from .config import ConfigError, DeptConfig
from .errors import UserError

PEFT_PROMPT_TUNING = "PROMPT_TUNING"
REFERENCE_DEPT = "PROMPT_TUNING_LORA"
# PEFT's task types <-> dept's families. Encoder models are not mapped: PEFT's SEQ_CLS
# reads the base model's own classifier, dept's encoder head is the adapter's.
TASK_TYPES = {"CAUSAL_LM": "causal", "SEQ_2_SEQ_LM": "seq2seq"}
FAMILY_TASK_TYPES = {family: task_type for task_type, family in TASK_TYPES.items()}
PEFT_PROMPT_KEY = "prompt_embeddings"
REFERENCE_A_KEY = "prompt_encoder.lora_embedding_A"
REFERENCE_B_KEY = "prompt_encoder.lora_embedding_B"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_INITS = {"TEXT": "text", "RANDOM": "random", "SAMPLE_VOCAB": "vocab"}
# Written beside an exported PEFT folder: marks the folder as dept's (so a re-export may
# replace it) and keeps what PEFT's config has no field for (s, on_overflow, the task).
EXPORT_MARKER = "dept_export.json"


class InteropError(UserError, ValueError):
    """A foreign adapter dept cannot read exactly, or an adapter PEFT cannot represent."""


def is_foreign(record: dict) -> bool:
    """Whether an adapter_config.json record was written by PEFT or the reference code."""
    return "peft_type" in record and "method" not in record


def foreign_config(record: dict, directory: Path) -> tuple[DeptConfig, dict]:
    """(DeptConfig, base-model facts) of a PEFT prompt-tuning or reference DePT config."""
    path = directory / "adapter_config.json"
    kind = record.get("peft_type")
    if kind not in (PEFT_PROMPT_TUNING, REFERENCE_DEPT):
        raise InteropError(f"{path}: a PEFT {kind} adapter; dept reads PEFT's {PEFT_PROMPT_TUNING} and the "
                           f"reference DePT's {REFERENCE_DEPT} adapters only")
    task_type = record.get("task_type")
    if task_type not in TASK_TYPES:
        raise InteropError(f"{path}: task_type {task_type!r}; dept reads prompt adapters of "
                           f"{sorted(TASK_TYPES)} models (PEFT's classifiers use the base model's own head)")
    submodules = record.get("num_transformer_submodules")
    if submodules is None:  # PEFT's own rule when the field is unset
        submodules = 2 if task_type == "SEQ_2_SEQ_LM" else 1
    if submodules != 1:
        raise InteropError(f"{path}: num_transformer_submodules={submodules}: PEFT also prepends a prompt to "
                           f"the decoder's input, which dept does not do (only 1 is read exactly)")
    for key in ("num_virtual_tokens", "token_dim"):
        if not isinstance(record.get(key), int):
            raise InteropError(f"{path}: field {key!r} missing or not an integer")
    saved = _export_record(directory)  # dept's own fields, if dept wrote this folder
    fields = {"prompt_length": record["num_virtual_tokens"], "rank": 0,
              "prompt_init": PEFT_INITS.get(record.get("prompt_tuning_init") or "RANDOM", "random")}
    if fields["prompt_init"] == "text":
        fields["init_text"] = record.get("prompt_tuning_init_text") or ""
        if not fields["init_text"].strip():
            fields["prompt_init"] = "random"
    for key in ("max_length", "on_overflow", "task"):
        if key in saved:
            fields[key] = saved[key]
    if kind == REFERENCE_DEPT:
        if task_type == "CAUSAL_LM":
            raise InteropError(f"{path}: a reference DePT checkpoint of a decoder-only model (task_type CAUSAL_LM): "
                               f"the reference left-pads rows to max_length and adds A·B to every column, so token j "
                               f"of n reads row s-n+j where dept reads row j; refused rather than loaded inexactly")
        r, alpha, s = record.get("r"), record.get("lora_alpha"), record.get("max_length")
        if not isinstance(r, int) or not isinstance(s, int) or not isinstance(alpha, (int, float)):
            raise InteropError(f"{path}: a {REFERENCE_DEPT} adapter needs integer 'r', 'max_length' and a "
                               f"number 'lora_alpha'")
        if r > 0 and not record.get("save_lora_embeddings", True):
            raise InteropError(f"{path}: save_lora_embeddings is false, so the low-rank pair was never saved")
        # The reference's scale is lora_alpha / sqrt(r): dept's 'sqrt' scaling.
        fields.update(rank=r, alpha=float(alpha), scaling="sqrt", max_length=s)
    try:
        config = DeptConfig(**fields)
    except (ConfigError, TypeError) as err:
        raise InteropError(f"{path}: {err}") from err
    base = {"base_model_name_or_path": record.get("base_model_name_or_path") or "",
            "model_family": TASK_TYPES[task_type], "hidden_size": record["token_dim"]}
    if "hidden_size" in record and record["hidden_size"] != record["token_dim"]:
        raise InteropError(f"{path}: hidden_size {record['hidden_size']} and token_dim {record['token_dim']} differ")
    return config, base


def foreign_tensors(directory: Path, config: DeptConfig, kind: str) -> dict[str, Tensor]:
    """The tensors of a foreign adapter under dept's names (prompt, lora_a, lora_b)."""
    present = [directory / name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not present:
        raise InteropError(f"{directory}: holds neither of {list(WEIGHT_FILES)}")
    path = present[0]
    raw = _load_safetensors(path) if path.suffix == ".safetensors" else load_weights_only(path)
    wanted = {PEFT_PROMPT_KEY: "prompt"}
    if kind == REFERENCE_DEPT and config.rank:
        wanted.update({REFERENCE_A_KEY: "lora_a", REFERENCE_B_KEY: "lora_b"})
    missing = sorted(set(wanted) - set(raw))
    if missing:
        raise InteropError(f"{path}: missing tensor(s) {missing}; it holds {sorted(raw)}")
    extra = sorted(set(raw) - set(wanted) - {REFERENCE_A_KEY, REFERENCE_B_KEY})
    if extra:
        raise InteropError(f"{path}: unexpected tensor(s) {extra} (dept reads {sorted(wanted)})")
    return {name: raw[key].float() for key, name in wanted.items()}


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InteropError(f"{path}: corrupt or not a safetensors file ({err})") from err


def load_weights_only(path: Path) -> dict[str, Tensor]:
    """A .bin state dict through torch's weights-only unpickler; anything but a flat dict of
    tensors is refused."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InteropError(f"{path}: refused: not a plain file of tensors (read with weights_only=True; "
                           f"{first})") from None
    if not isinstance(loaded, dict) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                               for k, v in loaded.items()):
        raise InteropError(f"{path}: refused: expected a dict of named tensors, got {type(loaded).__name__}"
                           + (f" with values {sorted({type(v).__name__ for v in loaded.values()})}"
                              if isinstance(loaded, dict) else ""))
    return loaded


def _export_record(directory: Path) -> dict:
    marker = directory / EXPORT_MARKER
    if not marker.is_file():
        return {}
    try:
        record = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InteropError(f"{marker}: not valid JSON ({err})") from err
    return record.get("dept_config", {}) if isinstance(record, dict) else {}


def export_peft(config: DeptConfig, tensors: dict[str, Tensor], base_facts: dict, directory: str | Path,
                source: str = "") -> Path:
    """Write a rank-0 adapter as a PEFT PROMPT_TUNING folder. Refuses an r > 0 adapter, an encoder
    model's adapter, and an existing non-empty folder that dept did not export into."""
    from peft import PromptTuningConfig

    directory = Path(directory)
    if config.rank:
        raise InteropError(f"{source or 'adapter'}: rank {config.rank} > 0: PEFT's prompt tuning has no "
                           f"position-wise update of the input embeddings (scale·A·B), so a DePT adapter "
                           f"cannot be exported to PEFT without changing what it computes; only rank-0 "
                           f"(vanilla prompt tuning) adapters can")
    family = base_facts.get("model_family")
    if family not in FAMILY_TASK_TYPES:
        raise InteropError(f"{source or 'adapter'}: a {family} model's adapter; PEFT's prompt tuning of "
                           f"classifiers uses the base model's own head and puts the prompt before [CLS], "
                           f"so only causal and seq2seq adapters are exported")
    if directory.exists() and (not directory.is_dir() or
                               (any(directory.iterdir()) and not (directory / EXPORT_MARKER).is_file())):
        raise InteropError(f"--output_dir {directory}: exists and is not empty, and dept did not export into "
                           f"it; choose a new or empty folder")
    directory.mkdir(parents=True, exist_ok=True)
    peft_config = PromptTuningConfig(
        task_type=FAMILY_TASK_TYPES[family], num_virtual_tokens=config.prompt_length,
        token_dim=base_facts["hidden_size"], num_transformer_submodules=1,
        base_model_name_or_path=base_facts.get("base_model_name_or_path") or None, inference_mode=True)
    peft_config.save_pretrained(str(directory))
    prompt = tensors["prompt"].float().contiguous().cpu()                  # (m, d)
    save_file({PEFT_PROMPT_KEY: prompt}, str(directory / WEIGHT_FILES[0]), metadata={"format": "pt"})
    (directory / EXPORT_MARKER).write_text(json.dumps(
        {"exported_by": "dept", "dept_version": __version__, "source": str(source),
         "dept_config": config.to_dict()}, indent=2, sort_keys=True) + "\n")
    return directory
