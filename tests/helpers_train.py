"""Tiny model folders and ways to run `dept` for the training and CLI tests.

The folders hold 2-layer, width-32 models that use the real tokenizers (SmolLM2's for the
decoder-only and encoder-decoder models, MiniLM's for the encoder), so `dept train` runs on
them exactly as on a hub model, in about a second. They are built once per test session.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dept.cli.main import main

_FOLDERS: dict[str, Path] = {}  # built once per session, shared by every test module


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory) -> Path:
    return tiny_model_dir("llama", tmp_path_factory)


@pytest.fixture(scope="session")
def t5_dir(tmp_path_factory) -> Path:
    return tiny_model_dir("t5", tmp_path_factory)


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    return tiny_model_dir("bert", tmp_path_factory)


# `dept train` flags of a run that takes about a second on a tiny model.
QUICK = ["--task", "demo", "--max_steps", "6", "--eval_steps", "3", "--save_steps", "3",
         "--per_device_train_batch_size", "4", "--max_eval_samples", "16", "--prompt_init", "random"]


def tiny_model_dir(kind: str, tmp_path_factory) -> Path:
    """A saved tiny model + tokenizer: kind is 'llama' (causal), 't5' (seq2seq) or 'bert' (encoder)."""
    if kind in _FOLDERS:
        return _FOLDERS[kind]
    from transformers import (AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, T5Config,
                              T5ForConditionalGeneration)

    import dept.pretrained

    path = tmp_path_factory.getbasetemp() / "tiny_models" / kind
    torch.manual_seed(0)
    if kind == "bert":
        tok = AutoTokenizer.from_pretrained(dept.pretrained.resolve("minilm-l6"))
        model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, pad_token_id=tok.pad_token_id))
    else:
        tok = AutoTokenizer.from_pretrained(dept.pretrained.resolve("smollm2-135m"))
        if kind in ("llama", "llama-vllm"):
            # llama-vllm: heads of 32 dimensions, the smallest vLLM's CPU attention takes
            d, heads = (32, 4) if kind == "llama" else (64, 2)
            model = LlamaForCausalLM(LlamaConfig(
                vocab_size=len(tok), hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2,
                num_attention_heads=heads, num_key_value_heads=heads // 2, pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id))
        elif kind == "t5":
            model = T5ForConditionalGeneration(T5Config(
                vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                dropout_rate=0.0, pad_token_id=tok.pad_token_id, decoder_start_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id))
        else:
            raise ValueError(kind)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    _FOLDERS[kind] = path
    return path


def dept_cli(*args: str) -> dict | None:
    """Run `dept ARGS` in this process; the JSON it prints (None if it prints none)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    assert code == 0
    text = out.getvalue()
    start = text.find("{")
    if start < 0:
        return None
    return json.JSONDecoder().raw_decode(text[start:])[0]


def dept_fails(*args: str, capsys=None) -> str:
    """Run `dept ARGS` in this process expecting a user error: exit status 2 and exactly one line
    on stderr, without a traceback. Returns that line."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    lines = err.getvalue().splitlines()
    assert code == 2, (code, err.getvalue())
    assert len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
    assert lines[0].startswith(f"dept {args[0]}: "), lines[0]
    return lines[0]


def subprocess_env() -> dict[str, str]:
    """One thread per process (the cores are shared), no stray distributed settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    return env


def dept_command() -> list[str]:
    """The `dept` console script if installed, else the module it runs."""
    exe = shutil.which("dept")
    return [exe] if exe else [sys.executable, "-m", "dept.cli.main"]


def run(cmd: list, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(), **kw)


def write_rte(folder, rows: int = 24) -> None:
    """A small RTE folder in the official GLUE layout; its two label words tokenise to 2 and 5 tokens."""
    words = ["cat", "dog", "sun", "rain", "road", "tree", "blue", "cold"]
    header = "index\tsentence1\tsentence2\tlabel\n"
    for name, n in (("train.tsv", rows), ("dev.tsv", 8)):
        lines = [f"{i}\tThe {words[i % 8]} is {words[(3 * i) % 8]} {'and ' * (i % 5)}here.\t"
                 f"A {words[(i + 1) % 8]}.\t{'entailment' if i % 3 else 'not_entailment'}\n" for i in range(n)]
        (folder / "RTE").mkdir(parents=True, exist_ok=True)
        (folder / "RTE" / name).write_text(header + "".join(lines))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def validation_lines(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if r.get("split") == "validation"]


def final_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    """The trainable tensors at the last step (the last checkpoint of a finished run)."""
    return load_file(str(Path(run_dir) / "checkpoint" / "trainable.safetensors"))


def adapter_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "adapter_model.safetensors"))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


_RUNS: dict[tuple, Path] = {}


def trained_run(model_dir: Path, tmp_path_factory, *extra) -> Path:
    """The output folder of `dept train --model model_dir QUICK... extra`, trained once per session."""
    key = (str(model_dir), *map(str, extra))
    if key not in _RUNS:
        out = tmp_path_factory.mktemp("run")
        dept_cli("train", "--model", model_dir, *QUICK, "--output_dir", out, "--logging_steps", 2, *extra)
        _RUNS[key] = out
    return _RUNS[key]


def predicted(adapter_dir, sentences, *extra) -> list[str]:
    """What `dept predict` prints for each sentence (in process), the adapter alone."""
    stdin, stdout = sys.stdin, sys.stdout
    sys.stdin = io.StringIO("".join(json.dumps({"sentence": s}) + "\n" for s in sentences))
    sys.stdout = out = io.StringIO()
    try:
        assert main(["predict", "--adapter", str(adapter_dir), *map(str, extra)]) == 0
    finally:
        sys.stdin, sys.stdout = stdin, stdout
    return [json.loads(line)["prediction"] for line in out.getvalue().splitlines()]
