"""TrainOptions: every knob of `dept train`, one dataclass for the CLI, YAML files and code.

Field names are dept's one word per concept (prompt_length m, rank r, max_length s, as in
DeptConfig and `dept budget`); `aliases` in a field's metadata lists the other accepted
spellings, among them the reference train.py's (`--prefix_length`, `--r`,
`--max_seq_length`, `--peft_model_id`). The LoRA baseline's own options start with
`lora_baseline_` so they cannot be mistaken for DePT's low-rank update.
"""

from __future__ import annotations

import functools
import typing
from dataclasses import asdict, dataclass, field, fields

from ..config import DEFAULT_INIT_TEXT, PROMPT_INITS, SCALINGS
from ..tasks.meta import DECODERS, DEFAULT_SPLIT_SEED
from ..tasks.splits import PROTOCOLS
from ..tasks.templates import TARGET_WORDS

METHODS = ("dept", "pt", "lora", "full")

# Options that count steps or examples: 0 would divide by zero or train nothing.
AT_LEAST_ONE = ("max_steps", "eval_steps", "save_steps", "logging_steps", "per_device_train_batch_size",
                "per_device_eval_batch_size", "gradient_accumulation_steps", "max_length", "max_target_length")

# Scale-aware default learning rates, as multiples of the RMS of the model's input
# embeddings: Adam moves each entry by about the learning rate whatever the gradient,
# so what matters is the rate relative to the entries it moves (docs/method.md gives the
# measurements behind these two numbers).
PROMPT_LR_PER_RMS = 0.22
LOWRANK_LR_PER_RMS = 7.4e-4


def opt(default, help: str, *aliases: str, choices=None):
    return field(default=default, metadata={"help": help, "aliases": aliases, "choices": choices})


@dataclass
class TrainOptions:
    # --- what to train ---
    model_name_or_path: str = opt("smollm2-135m", "base model: hub name, local folder, or packaged alias "
                                  "(smollm2-135m, minilm-l6)", "model")
    task: str = opt("demo", "task name (see `dept tasks`)", "task_name")
    data_dir: str | None = opt(None, "folder of the task's official files (suite or task folder)")
    from_hub: bool = opt(False, "load the task from the Hugging Face hub instead of data_dir")
    output_dir: str = opt("runs/dept", "where the adapter, results.json, metrics.jsonl, curves.png go")
    method: str = opt("dept", "dept, pt (vanilla prompt tuning), lora (PEFT), full (all weights)",
                      choices=METHODS)
    # --- the adapter ---
    prompt_length: int | None = opt(None, "DePT's m (default: 60, or the vanilla length for pt)",
                                    "prefix_length", "num_virtual_tokens")
    rank: int | None = opt(None, "r: rank of the low-rank update (default: solved from the budget of "
                           "vanilla_length)", "r")
    vanilla_length: int = opt(100, "l: the vanilla PT length whose parameter budget DePT matches")
    alpha: float = opt(8.0, "numerator of the update's scale (scale = alpha/sqrt(r))", "lora_alpha")
    scaling: str = opt("sqrt", "sqrt: alpha/sqrt(r) as the reference; linear: alpha/r", choices=SCALINGS)
    prompt_init: str = opt("text", "text, vocab or random", choices=PROMPT_INITS)
    init_text: str = opt(DEFAULT_INIT_TEXT, "init text for prompt_init=text", "prompt_tuning_init_text")
    init_from: str | None = opt(None, "start from a source-task adapter folder (transfer)", "peft_model_id")
    lora_baseline_rank: int = opt(8, "method=lora only: the LoRA baseline's rank")
    lora_baseline_alpha: int = opt(16, "method=lora only: the LoRA baseline's alpha")
    # --- data ---
    max_length: int = opt(256, "s: maximum input length; longer inputs are truncated", "max_seq_length")
    max_target_length: int = opt(16, "maximum target tokens")
    pad_to_max_length: bool = opt(False, "pad every input to max_seq_length (reference policy; slower)")
    protocol: str = opt("paper", "paper: the paper's splits; official: the files' own splits",
                        choices=PROTOCOLS)
    target_words: str = opt("natural", "natural label words or the reference's label indices",
                            choices=TARGET_WORDS)
    k_shot_examples: int | None = opt(None, "train on k examples per class (few-shot)", "k_shot_example")
    max_train_samples: int | None = opt(None, "cap the training set (debugging, CPU budgets)")
    max_eval_samples: int | None = opt(None, "cap the validation and test sets")
    # --- optimisation ---
    learning_rate: float | None = opt(None, "soft prompt learning rate (default: "
                                      f"{PROMPT_LR_PER_RMS} x embedding RMS); LoRA/full use it too", "lr")
    lora_embedding_lr: float | None = opt(None, "low-rank pair learning rate (default: "
                                          f"{LOWRANK_LR_PER_RMS} x embedding RMS)")
    head_lr: float = opt(1e-2, "encoder models: learning rate of the classification head")
    weight_decay: float = opt(1e-5, "AdamW weight decay, applied to every trainable tensor")
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 disables)")
    max_steps: int = opt(1000, "optimiser steps")
    warmup_steps: int | None = opt(None, "linear warm-up steps (default: 6% of max_steps)")
    per_device_train_batch_size: int = opt(16, "training batch per process", "batch_size")
    per_device_eval_batch_size: int = opt(32, "evaluation batch per process")
    gradient_accumulation_steps: int = opt(1, "micro-batches per optimiser step")
    mixed_precision: str = opt("auto", "auto (bf16 on CUDA where supported, else fp32), no, bf16, fp16",
                               choices=("auto", "no", "bf16", "fp16"))
    seed: int = opt(DEFAULT_SPLIT_SEED, "seed for initialisation, data order and splits")
    # --- evaluation, checkpoints ---
    decoder: str = opt("rank", "rank: rank classification over the label words (never an invalid "
                       "label); generate: greedy generation (the paper)", choices=DECODERS)
    eval_steps: int = opt(100, "evaluate on validation every N steps (and at the end)")
    eval_at_start: bool = opt(True, "evaluate once before training (the 'before' number)")
    save_steps: int = opt(100, "write a resumable checkpoint every N steps")
    logging_steps: int = opt(10, "log training loss every N steps")
    resume: bool = opt(False, "continue from output_dir/checkpoint if present", "resume_from_checkpoint")
    overwrite_output_dir: bool = opt(False, "start afresh even if output_dir holds a run")
    no_test: bool = opt(False, "skip the final test-split evaluation")

    def __post_init__(self) -> None:
        """Refuse a value no run can use, naming the option: YAML files and code do not pass
        through argparse's type and choice checks (a misspelt `method: loar` would otherwise
        fall through to full fine-tuning)."""
        for f in fields(self):
            value = getattr(self, f.name)
            kind, optional = field_type(f.name)
            if value is None and optional:
                continue
            if kind is bool:
                ok = isinstance(value, bool)
            elif kind in (int, float):
                ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
            else:
                ok = isinstance(value, kind)
            if not ok:
                raise ValueError(f"option {f.name}: expected {kind.__name__}{' or null' if optional else ''}, "
                                 f"got {value!r}")
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ValueError(f"option {f.name}: must be one of {list(choices)}, got {value!r}")
            if f.name in AT_LEAST_ONE and value < 1:
                raise ValueError(f"option {f.name}: must be at least 1, got {value}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> dict[str, str]:
        """Every accepted spelling (name or alias) -> field name."""
        names = {}
        for f in fields(cls):
            names[f.name] = f.name
            for alias in f.metadata.get("aliases", ()):
                names[alias] = f.name
        return names

    @classmethod
    def from_mapping(cls, data: dict, source: str = "options") -> "TrainOptions":
        """From a YAML/JSON mapping whose keys are field names or aliases; unknown keys are errors."""
        names = cls.field_names()
        unknown = sorted(k for k in data if k not in names)
        if unknown:
            raise ValueError(f"{source}: unknown option(s) {unknown}")
        return cls(**{names[k]: v for k, v in data.items()})


@functools.cache
def _hints() -> dict:
    return typing.get_type_hints(TrainOptions)


def field_type(name: str) -> tuple[type, bool]:
    """(value type, whether None is allowed) of a TrainOptions field: `int | None` -> (int, True)."""
    hint = _hints()[name]
    args = typing.get_args(hint)
    kinds = [a for a in args if a is not type(None)] or [hint]
    return kinds[0], type(None) in args
