"""TrainOptions: every knob of `dept train`, one dataclass for the CLI, YAML files and code.

Field names are dept's one word per concept (prompt_length m, rank r, max_length s, as in
DeptConfig and `dept budget`); `aliases` in a field's metadata lists the other accepted
spellings, among them the reference train.py's (`--prefix_length`, `--r`,
`--max_seq_length`, `--peft_model_id`, `--lora_embedding_lr`). The low-rank update is
`lowrank` everywhere users see it (`--lowrank_lr`, the `lowrank` optimiser group, the
`lr_lowrank` metric); options stored by older runs are read through `current_names`. The LoRA baseline's own options start with
`lora_baseline_` so they cannot be mistaken for DePT's low-rank update. Bounds live in the
fields too (`minimum`, `positive`) and are checked by options.check_options.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..config import DEFAULT_INIT_TEXT, OVERFLOW_POLICIES, PROMPT_INITS, SCALINGS
from ..errors import OptionError
from ..options import check_options, opt, spellings
from ..tasks.meta import DECODERS, DEFAULT_SPLIT_SEED
from ..tasks.splits import PROTOCOLS
from ..tasks.templates import TARGET_WORDS

METHODS = ("dept", "pt", "lora", "full")

# Scale-aware default learning rates, as multiples of the RMS of the model's input
# embeddings: Adam moves each entry by about the learning rate whatever the gradient,
# so what matters is the rate relative to the entries it moves (docs/method.md gives the
# measurements behind these two numbers).
PROMPT_LR_PER_RMS = 0.22
LOWRANK_LR_PER_RMS = 7.4e-4

# Options that cannot change what a run computes: a resumed run may differ in these.
RESUME_MAY_DIFFER = ("output_dir", "resume", "overwrite_output_dir", "logging_steps", "save_steps",
                     "per_device_eval_batch_size")


@dataclass
class TrainOptions:
    # --- what to train ---
    model_name_or_path: str = opt("smollm2-135m", "base model: hub name, local folder, or packaged alias "
                                  "(smollm2-135m, gemma3-270m, minilm-l6)", "model")
    task: str = opt("demo", "task name (see `dept tasks`)", "task_name")
    data_dir: str | None = opt(None, "folder of the task's official files (suite or task folder)")
    from_hub: bool = opt(False, "load the task from the Hugging Face hub instead of data_dir")
    output_dir: str = opt("runs/dept", "where the adapter, results.json, metrics.jsonl, curves.png go")
    method: str = opt("dept", "dept, pt (vanilla prompt tuning), lora (PEFT), full (all weights)",
                      choices=METHODS)
    # --- your own task (instead of --task): files, or a task file holding the same fields ---
    train_file: str | None = opt(None, "your task's training file: .csv, .tsv, .jsonl, .json or .parquet")
    validation_file: str | None = opt(None, "your task's validation file (default: 10% of train, seed 42)")
    test_file: str | None = opt(None, "your task's test file (default: the validation split)")
    task_file: str | None = opt(None, "a YAML task file: files, input_template, label_column, label_words, "
                                "task_type, metric (flags given here override it)")
    input_template: str | None = opt(None, "the input as a Python format string over your columns, e.g. "
                                     "'premise: {premise} hypothesis: {hypothesis}'")
    label_column: str | None = opt(None, "the column holding the label (default: label)")
    task_type: str | None = opt(None, "classification, regression or generation (default: inferred from the "
                                "labels, and said)", choices=("classification", "regression", "generation"))
    label_words: str | None = opt(None, "what the model should say for each label, e.g. '0=negative,1=positive' "
                                  "(default: the label values)")
    metric: str | None = opt(None, "your task's main metric (default: accuracy, pearson or rougeL by type)")
    skip_bad_rows: bool = opt(False, "skip rows with a missing column, an empty input or an empty label, "
                              "counting them, instead of stopping at the first")
    # --- the adapter ---
    prompt_length: int | None = opt(None, "m: soft prompt length (default: 60, or the vanilla length for pt)",
                                    "prefix_length", "num_virtual_tokens", minimum=0)
    rank: int | None = opt(None, "r: rank of the low-rank update (default: solved from the budget of "
                           "vanilla_length)", "r", minimum=0)
    vanilla_length: int = opt(100, "l: the vanilla PT length whose parameter budget DePT matches", minimum=1)
    alpha: float = opt(8.0, "numerator of the update's scale (scale = alpha/sqrt(r))", "lora_alpha",
                       positive=True)
    scaling: str = opt("sqrt", "sqrt: alpha/sqrt(r) as the reference; linear: alpha/r", choices=SCALINGS)
    prompt_init: str = opt("text", "text, vocab or random", choices=PROMPT_INITS)
    init_text: str = opt(DEFAULT_INIT_TEXT, "init text for prompt_init=text", "prompt_tuning_init_text")
    init_from: str | None = opt(None, "start from a source-task adapter folder (transfer)", "peft_model_id")
    on_overflow: str = opt("truncate", "inputs longer than max_length: truncate keeps the first s tokens, "
                           "error refuses them (saved with the adapter)", choices=OVERFLOW_POLICIES)
    lora_baseline_rank: int = opt(8, "method=lora only: the LoRA baseline's rank", minimum=1)
    lora_baseline_alpha: int = opt(16, "method=lora only: the LoRA baseline's alpha", positive=True)
    # --- data ---
    max_length: int = opt(256, "s: maximum input length; longer inputs are truncated", "max_seq_length",
                          minimum=1)
    max_target_length: int = opt(16, "maximum target tokens (and new tokens when evaluating by generation)",
                                 minimum=1)
    pad_to_max_length: bool = opt(False, "pad every input to max_length (reference policy; slower)")
    protocol: str = opt("paper", "paper: the paper's splits, QA scored against the first gold answer (the "
                        "reference's); official: the files' own splits, QA against all gold answers (MRQA)",
                        choices=PROTOCOLS)
    target_words: str = opt("natural", "natural label words or the reference's label indices",
                            choices=TARGET_WORDS)
    k_shot_examples: int | None = opt(None, "train on k examples per class (few-shot)", "k_shot_example",
                                      minimum=1)
    max_train_samples: int | None = opt(None, "cap the training set (debugging, CPU budgets)", minimum=1)
    max_eval_samples: int | None = opt(None, "cap the validation and test sets", minimum=1)
    # --- optimisation ---
    learning_rate: float | None = opt(None, "soft prompt learning rate (default: "
                                      f"{PROMPT_LR_PER_RMS} x embedding RMS); LoRA/full use it too", "lr",
                                      positive=True)
    lowrank_lr: float | None = opt(None, "learning rate of the low-rank update A, B (default: "
                                   f"{LOWRANK_LR_PER_RMS} x embedding RMS)", "lora_embedding_lr", positive=True)
    head_lr: float = opt(1e-2, "encoder models: learning rate of the classification head", positive=True)
    weight_decay: float = opt(1e-5, "AdamW weight decay, applied to every trainable tensor", minimum=0)
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 disables)", minimum=0)
    max_steps: int = opt(1000, "optimiser steps", minimum=1)
    warmup_steps: int | None = opt(None, "linear warm-up steps (default: 6% of max_steps)", minimum=0)
    per_device_train_batch_size: int = opt(16, "training batch per process", "batch_size", "train_batch_size",
                                           minimum=1)
    per_device_eval_batch_size: int = opt(32, "evaluation batch per process", "eval_batch_size", minimum=1)
    gradient_accumulation_steps: int = opt(1, "micro-batches per optimiser step", minimum=1)
    no_share_prefix: bool = opt(False, "decoder-only models: run the soft prompt in every row instead of once "
                                "per batch as a shared KV cache (the same numbers, slower; for comparison)")
    mixed_precision: str = opt("auto", "auto (bf16 on CUDA where supported, else fp32), no, bf16, fp16",
                               choices=("auto", "no", "bf16", "fp16"))
    seed: int = opt(42, "seed for initialisation, data order and k-shot sampling")
    split_seed: int = opt(DEFAULT_SPLIT_SEED, "seed the paper protocol cuts validation/test splits with: fixed "
                          "(42, as the reference code) whatever the training seed, so seeds share a test set")
    # --- evaluation, checkpoints ---
    decoder: str = opt("rank", "rank: rank classification over the label words (never an invalid "
                       "label); generate: greedy generation (the paper)", choices=DECODERS)
    eval_steps: int = opt(100, "evaluate on validation every N steps (and at the end)", minimum=1)
    eval_at_start: bool = opt(True, "evaluate once before training (the 'before' number)")
    save_steps: int = opt(100, "write a resumable checkpoint every N steps", minimum=1)
    logging_steps: int = opt(10, "log training loss every N steps", minimum=1)
    resume: bool = opt(False, "continue from output_dir/checkpoint; refused if an option that changes "
                       "the result differs from the checkpoint's", "resume_from_checkpoint")
    overwrite_output_dir: bool = opt(False, "start afresh in output_dir; only a folder dept made is emptied")
    no_test: bool = opt(False, "skip the final test-split evaluation")

    def __post_init__(self) -> None:
        check_options(self)
        if self.train_file and self.task_file:
            raise OptionError("give your task as --train_file (and friends) or as --task_file, not both")
        if self.custom_task and not self.input_template and not self.task_file:
            raise OptionError("--train_file needs --input_template naming its columns, e.g. 'review: {text}'")

    @property
    def custom_task(self) -> bool:
        """A task of the user's own files rather than one of the table's."""
        return bool(self.train_file or self.task_file)

    def to_dict(self) -> dict:
        return asdict(self)


def current_names(stored: dict) -> dict:
    """Options as a run folder stored them (results.json, a checkpoint's options.json), with
    every older spelling (`lora_embedding_lr` before it was `lowrank_lr`) under today's name."""
    names = spellings(TrainOptions)
    return {names.get(key, key): value for key, value in stored.items()}


def result_fields() -> list[str]:
    """The options that can change what a run computes (compared when resuming)."""
    return [f.name for f in fields(TrainOptions) if f.name not in RESUME_MAY_DIFFER]
