"""Data parallelism on CPU (gloo): two processes with batch 4 each train the adapter one process
with batch 8 trains, under torchrun and under accelerate launch."""

from __future__ import annotations

import shutil
import socket
import sys

import pytest
from helpers_tiny import one_thread  # noqa: F401  (autouse: one CPU thread per module)
from helpers_train import (dept_cli, final_tensors, llama_dir, max_abs_diff, results, run,  # noqa: F401
                           validation_lines, write_rte)

# Observed max |difference| ~1e-7: the same sums in another order (gloo all-reduce).
TOLERANCE = 1e-6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(model_dir, data_dir) -> list:
    # RTE's label words have 2 and 5 tokens: unequal targets per process test the loss weighting.
    return ["train", "--model", model_dir, "--task", "rte", "--data_dir", data_dir, "--max_steps", 4,
            "--eval_steps", 2, "--save_steps", 2, "--max_eval_samples", 8, "--max_seq_length", 48,
            "--prompt_init", "random", "--learning_rate", 0.05, "--lora_embedding_lr", 0.01]


@pytest.fixture(scope="module")
def single(llama_dir, tmp_path_factory):
    """The one-process reference: batch 8."""
    root = tmp_path_factory.mktemp("ddp")
    write_rte(root / "glue")
    out = root / "single"
    dept_cli(*train_args(llama_dir, root / "glue"), "--output_dir", out, "--per_device_train_batch_size", 8)
    return root, out


def check_same_as_single(out, single_out) -> None:
    assert results(out)["processes"] == 2 and results(single_out)["processes"] == 1
    assert max_abs_diff(final_tensors(out), final_tensors(single_out)) < TOLERANCE
    assert {p.name for p in (out / "checkpoint").glob("rng-*.safetensors")} == {"rng-0.safetensors",
                                                                              "rng-1.safetensors"}
    assert [v["accuracy"] for v in validation_lines(out)] == [v["accuracy"] for v in validation_lines(single_out)]
    assert results(out)["train_examples_per_second"] > 0


def test_torchrun_two_processes_equal_one_with_twice_the_batch(llama_dir, single):
    root, single_out = single
    out = root / "torchrun"
    done = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", free_port(),
                "-m", "dept.cli.main", *train_args(llama_dir, root / "glue"), "--output_dir", out,
                "--per_device_train_batch_size", 4])
    assert done.returncode == 0, done.stderr[-3000:]
    check_same_as_single(out, single_out)


@pytest.mark.slow
def test_accelerate_launch_two_processes(llama_dir, single):
    """`accelerate launch --multi_gpu --num_processes 2` runs two gloo processes on a machine
    without GPUs (`--cpu` alone would start one process: Accelerate's multi-CPU launch is mpirun)."""
    if shutil.which("accelerate") is None:
        pytest.skip("the accelerate command is not installed")
    root, single_out = single
    out = root / "accelerate"
    done = run(["accelerate", "launch", "--multi_gpu", "--num_processes", 2, "--num_machines", 1,
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", free_port(),
                "-m", "dept.cli.main", *train_args(llama_dir, root / "glue"), "--output_dir", out,
                "--per_device_train_batch_size", 4])
    assert done.returncode == 0, done.stderr[-3000:]
    check_same_as_single(out, single_out)
