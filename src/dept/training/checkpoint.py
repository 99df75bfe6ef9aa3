"""Resumable training state, without pickle: tensors in safetensors, the rest in JSON.

A checkpoint folder holds the trainable tensors, the optimiser's moments, the
scheduler's counters, every random generator's state (per process) and the trainer's
own counters (step, best metric). It is written beside the live one and renamed into
place, so a run killed mid-write resumes from the previous complete checkpoint.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..adapter import mismatched, restore
from ..errors import UserError

CHECKPOINT = "checkpoint"
OPTIONS = "options.json"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, keys, pos = random.getstate()
    np_state = np.random.get_state()
    meta = {"python": [version, list(keys), pos],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, keys, pos = meta["python"]
    random.setstate((version, tuple(keys), pos))
    name, keys, *rest = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


class CheckpointError(UserError, ValueError):
    """A checkpoint that is corrupt, or that a resumed run's options do not fit (names the file)."""


def save_checkpoint(output_dir: Path, *, trainable: dict[str, torch.Tensor], optimizer, scheduler,
                    trainer_state: dict, options: dict | None = None, rank: int = 0, is_main: bool = True,
                    barrier=lambda: None) -> Path:
    """Write output_dir/checkpoint atomically. `trainable`: name -> the tensors that train
    (model.trainable_parameters()); `options`: the run's options, compared when resuming.
    Every process writes its own RNG state."""
    final = output_dir / CHECKPOINT
    staging = output_dir / (CHECKPOINT + ".tmp")
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, str(staging / f"rng-{rank}.safetensors"))
    (staging / f"rng-{rank}.json").write_text(json.dumps(rng_meta))
    barrier()
    if is_main:
        save_file({n: p.detach().cpu().contiguous() for n, p in trainable.items()},
                  str(staging / "trainable.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(staging / "optimizer.safetensors"))
        (staging / "optimizer.json").write_text(json.dumps(opt_meta))
        (staging / "scheduler.json").write_text(json.dumps(scheduler.state_dict()))
        (staging / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
        if options is not None:
            (staging / OPTIONS).write_text(json.dumps(options, indent=2, sort_keys=True))
        old = output_dir / (CHECKPOINT + ".old")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        # else .old may be the only complete checkpoint (a run resumed from it): keep it
        # until the new one is in place.
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def find_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (the .old one if a kill fell between two renames)."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        path = output_dir / name
        if (path / "trainer_state.json").is_file():
            return path
    return None


def read_options(path: Path) -> dict | None:
    """The options a checkpoint was made with; None for a checkpoint that did not record them."""
    file = path / OPTIONS
    if not file.is_file():
        return None
    return _read(file, lambda f: json.loads(f.read_text()))


def _read(file: Path, reader):
    """reader(file), with a corrupt or unreadable file reported by name."""
    try:
        return reader(file)
    except (OSError, ValueError, SafetensorError, KeyError, TypeError) as err:
        raise CheckpointError(f"{file}: corrupt or unreadable checkpoint file ({err}); delete the "
                              f"checkpoint folder or pass --overwrite_output_dir to start afresh") from None


def load_checkpoint(path: Path, *, trainable: dict[str, torch.Tensor], optimizer, scheduler,
                    rank: int = 0) -> dict:
    """Restore everything saved by save_checkpoint into `trainable` (name -> tensor), the
    optimiser and the schedule; returns the trainer state."""
    file = path / "trainable.safetensors"
    saved = _read(file, lambda f: load_file(str(f)))
    differ = mismatched(trainable, saved)
    if differ:
        raise CheckpointError(f"{file}: its tensors do not fit the model's trainable ones ({differ[:5]})")
    restore(trainable, saved)
    optimizer_state = _read(path / "optimizer.safetensors", lambda f: load_file(str(f)))
    optimizer_meta = _read(path / "optimizer.json", lambda f: json.loads(f.read_text()))
    _read(path / "optimizer.json", lambda f: optimizer.load_state_dict(
        _unflatten_optimizer(optimizer_state, optimizer_meta)))
    _read(path / "scheduler.json", lambda f: scheduler.load_state_dict(json.loads(f.read_text())))
    rng_file = path / f"rng-{rank}.safetensors"
    if rng_file.is_file():
        rng = _read(rng_file, lambda f: load_file(str(f)))
        _read(path / f"rng-{rank}.json", lambda f: _set_rng_state(rng, json.loads(f.read_text())))
    return _read(path / "trainer_state.json", lambda f: json.loads(f.read_text()))
