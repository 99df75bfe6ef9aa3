"""TrainOptions: every knob of `dept train`, for the CLI, YAML files and code, in five groups:
run (what to train, where it goes), data, adapter, optimiser, evaluation.

Option names are dept's one word per concept (prompt_length m, rank r, max_length s, as in
DeptConfig and `dept budget`) and are unique across the groups, so each is also said flat
(`--rank`, `rank: 4`, `TrainOptions(rank=4)`). A field's aliases are the other accepted
spellings, among them the reference train.py's (`--prefix_length`, `--r`, `--max_seq_length`,
`--peft_model_id`, `--lora_embedding_lr`). The low-rank update is `lowrank` everywhere users
see it (`--lowrank_lr`, the `lowrank` optimiser group, the `lr_lowrank` metric); options stored
by older runs are read through `current_names`. The LoRA baseline's own options start with
`lora_baseline_` so they cannot be mistaken for DePT's low-rank update. Bounds and choices live
in the fields and pydantic checks them (dept/options.py).
"""

from __future__ import annotations

from pydantic import model_validator

from ..config import DEFAULT_INIT_TEXT, OVERFLOW_POLICIES, PROMPT_INITS, SCALINGS
from ..options import Options, opt
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


class RunOptions(Options):
    """What to train, where it goes, and how the run is kept."""

    model_name_or_path: str = opt('smollm2-135m', 'model')
    """base model: hub name, local folder, or packaged alias (smollm2-135m, gemma3-270m, minilm-l6)"""
    task: str = opt('demo', 'task_name')
    """task name (see `dept tasks`)"""
    method: str = opt('dept', choices=METHODS)
    """dept, pt (vanilla prompt tuning), lora (PEFT), full (all weights)"""
    output_dir: str = opt('runs/dept')
    """where the adapter, results.json, metrics.jsonl, curves.png go"""
    seed: int = opt(42)
    """seed for initialisation, data order and k-shot sampling"""
    mixed_precision: str = opt('auto', choices=('auto', 'no', 'bf16', 'fp16'))
    """auto (bf16 on CUDA where supported, else fp32), no, bf16, fp16"""
    no_share_prefix: bool = opt(False)
    """decoder-only models: run the soft prompt in every row instead of once per batch as a shared KV cache
    (the same numbers, slower; for comparison)"""
    save_steps: int = opt(100, minimum=1)
    """write a resumable checkpoint every N steps"""
    logging_steps: int = opt(10, minimum=1)
    """log training loss every N steps"""
    resume: bool = opt(False, 'resume_from_checkpoint')
    """continue from output_dir/checkpoint; refused if an option that changes the result differs from the
    checkpoint's"""
    overwrite_output_dir: bool = opt(False)
    """start afresh in output_dir; only a folder dept made is emptied"""


class DataOptions(Options):
    """The task's examples: the table's tasks or your own files, and how they are cut."""

    data_dir: str | None = opt(None)
    """folder of the task's official files (suite or task folder)"""
    from_hub: bool = opt(False)
    """load the task from the Hugging Face hub instead of data_dir"""
    train_file: str | None = opt(None)
    """your task's training file: .csv, .tsv, .jsonl, .json or .parquet"""
    validation_file: str | None = opt(None)
    """your task's validation file (default: 10% of train, seed 42)"""
    test_file: str | None = opt(None)
    """your task's test file (default: the validation split)"""
    task_file: str | None = opt(None)
    """a YAML task file: files, input_template, label_column, label_words, task_type, metric (flags given here
    override it)"""
    input_template: str | None = opt(None)
    """the input as a Python format string over your columns, e.g. 'premise: {premise} hypothesis:
    {hypothesis}'"""
    label_column: str | None = opt(None)
    """the column holding the label (default: label)"""
    task_type: str | None = opt(None, choices=('classification', 'regression', 'generation'))
    """classification, regression or generation (default: inferred from the labels, and said)"""
    label_words: str | None = opt(None)
    """what the model should say for each label, e.g. '0=negative,1=positive' (default: the label values)"""
    metric: str | None = opt(None)
    """your task's main metric (default: accuracy, pearson or rougeL by type)"""
    skip_bad_rows: bool = opt(False)
    """skip rows with a missing column, an empty input or an empty label, counting them, instead of stopping at
    the first"""
    max_target_length: int = opt(16, minimum=1)
    """maximum target tokens (and new tokens when evaluating by generation)"""
    pad_to_max_length: bool = opt(False)
    """pad every input to max_length (reference policy; slower)"""
    protocol: str = opt('paper', choices=PROTOCOLS)
    """paper: the paper's splits, QA scored against the first gold answer (the reference's); official: the
    files' own splits, QA against all gold answers (MRQA)"""
    target_words: str = opt('natural', choices=TARGET_WORDS)
    """natural label words or the reference's label indices"""
    k_shot_examples: int | None = opt(None, 'k_shot_example', minimum=1)
    """train on k examples per class (few-shot)"""
    max_train_samples: int | None = opt(None, minimum=1)
    """cap the training set (debugging, CPU budgets)"""
    max_eval_samples: int | None = opt(None, minimum=1)
    """cap the validation and test sets"""
    split_seed: int = opt(DEFAULT_SPLIT_SEED)
    """seed the paper protocol cuts validation/test splits with: fixed (42, as the reference code) whatever the
    training seed, so seeds share a test set"""


class AdapterOptions(Options):
    """The adapter's shape and initialisation (DeptConfig's fields, m and r solved from the budget when not given)."""

    prompt_length: int | None = opt(None, 'prefix_length', 'num_virtual_tokens', minimum=0)
    """m: soft prompt length (default: 60, or the vanilla length for pt)"""
    rank: int | None = opt(None, 'r', minimum=0)
    """r: rank of the low-rank update (default: solved from the budget of vanilla_length)"""
    vanilla_length: int = opt(100, minimum=1)
    """l: the vanilla PT length whose parameter budget DePT matches"""
    max_length: int = opt(256, 'max_seq_length', minimum=1)
    """s: maximum input length; longer inputs are truncated"""
    alpha: float = opt(8.0, 'lora_alpha', positive=True)
    """numerator of the update's scale (scale = alpha/sqrt(r))"""
    scaling: str = opt('sqrt', choices=SCALINGS)
    """sqrt: alpha/sqrt(r) as the reference; linear: alpha/r"""
    prompt_init: str = opt('text', choices=PROMPT_INITS)
    """text, vocab or random"""
    init_text: str = opt(DEFAULT_INIT_TEXT, 'prompt_tuning_init_text')
    """init text for prompt_init=text"""
    init_from: str | None = opt(None, 'peft_model_id')
    """start from a source-task adapter folder (transfer)"""
    on_overflow: str = opt('truncate', choices=OVERFLOW_POLICIES)
    """inputs longer than max_length: truncate keeps the first s tokens, error refuses them (saved with the
    adapter)"""
    prompt_multiple: int | None = opt(None, "block_size", minimum=1)
    """round m down to a multiple of this before r is solved (vLLM's prefix cache keeps whole blocks of 16
    vectors)"""
    lora_baseline_rank: int = opt(8, minimum=1)
    """method=lora only: the LoRA baseline's rank"""
    lora_baseline_alpha: int = opt(16, positive=True)
    """method=lora only: the LoRA baseline's alpha"""


class OptimiserOptions(Options):
    """AdamW, its two learning rates and the schedule."""

    learning_rate: float | None = opt(None, 'lr', positive=True)
    """soft prompt learning rate (default: 0.22 x embedding RMS); LoRA/full use it too"""
    lowrank_lr: float | None = opt(None, 'lora_embedding_lr', positive=True)
    """learning rate of the low-rank update A, B (default: 7.4e-4 x embedding RMS)"""
    head_lr: float = opt(0.01, positive=True)
    """encoder models: learning rate of the classification head"""
    weight_decay: float = opt(1e-05, minimum=0)
    """AdamW weight decay, applied to every trainable tensor"""
    max_grad_norm: float = opt(1.0, minimum=0)
    """gradient clipping norm (0 disables)"""
    max_steps: int = opt(1000, minimum=1)
    """optimiser steps"""
    warmup_steps: int | None = opt(None, minimum=0)
    """linear warm-up steps (default: 6% of max_steps)"""
    per_device_train_batch_size: int = opt(16, 'batch_size', 'train_batch_size', minimum=1)
    """training batch per process"""
    gradient_accumulation_steps: int = opt(1, minimum=1)
    """micro-batches per optimiser step"""


class EvaluationOptions(Options):
    """How and when the run is scored."""

    decoder: str = opt('rank', choices=DECODERS)
    """rank: rank classification over the label words (never an invalid label); generate: greedy generation
    (the paper)"""
    eval_steps: int = opt(100, minimum=1)
    """evaluate on validation every N steps (and at the end)"""
    eval_at_start: bool = opt(True)
    """evaluate once before training (the 'before' number)"""
    per_device_eval_batch_size: int = opt(32, 'eval_batch_size', minimum=1)
    """evaluation batch per process"""
    no_test: bool = opt(False)
    """skip the final test-split evaluation"""


class TrainOptions(Options):
    """Every knob of `dept train`, in five groups. Each option has one flat name across them:
    `TrainOptions(rank=4)`, `--rank 4` and `rank: 4` say the same as `adapter: {rank: 4}`."""

    run: RunOptions = RunOptions()
    data: DataOptions = DataOptions()
    adapter: AdapterOptions = AdapterOptions()
    optimiser: OptimiserOptions = OptimiserOptions()
    evaluation: EvaluationOptions = EvaluationOptions()

    @model_validator(mode="after")
    def _one_task(self):
        data = self.data
        if data.train_file and data.task_file:
            raise ValueError("give your task as --train_file (and friends) or as --task_file, not both")
        if self.custom_task and not data.input_template and not data.task_file:
            raise ValueError("--train_file needs --input_template naming its columns, e.g. 'review: {text}'")
        return self

    @property
    def custom_task(self) -> bool:
        """A task of the user's own files rather than one of the table's."""
        return bool(self.data.train_file or self.data.task_file)


def current_names(stored: dict) -> dict:
    """Options as a run folder stored them (results.json, a checkpoint's options.json), with
    every older spelling (`lora_embedding_lr` before it was `lowrank_lr`) under today's name."""
    names = TrainOptions.spellings()
    return {names.get(key, key): value for key, value in stored.items()}


def result_fields() -> list[str]:
    """The options that can change what a run computes (compared when resuming)."""
    return [name for _, name, _ in TrainOptions.leaves() if name not in RESUME_MAY_DIFFER]
