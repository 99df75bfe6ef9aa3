"""Dynamic padding against the reference policy, on real GLUE dev batches.

Ours: dept's Collator (each batch padded to its longest row) fed to DeptModel, which also
drops columns that are padding in every row. Reference: the DePT reference code's policy,
Collator(pad_to_max_length=True) so every input is s=256 long, the prompt concatenated in
front and A·B added at all s positions, so all m + s columns are computed. Both use the
same examples (dept's task loader and templates), the same adapter tensors and base.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from dept.budget import solve_budget
from dept.config import DeptConfig
from dept.data import Collator
from dept.families import SEQ2SEQ
from dept.model import DeptModel

TASKS = {"SST-2": "sst2", "RTE": "rte"}
PHASES = ("eval", "train")


def read_task(data_dir: Path, task: str, n: int) -> list:
    """The first n official dev examples, in file order (real batches, no length sorting)."""
    from dept.tasks.api import load_task

    return load_task(TASKS[task], "validation", Path(data_dir) / "glue", protocol="official")[:n]


def reference_forward(model: DeptModel, input_ids, attention_mask, labels):
    """The reference implementation's forward: embeddings + A·B at every one of the s
    positions (pads included), prompt concatenated, all columns computed."""
    adapter = model.dept_adapters[model.active_adapter]
    embeds = model.base_model.get_input_embeddings()(input_ids)        # (B, s, d)
    embeds = embeds + adapter.lowrank_table()[: input_ids.shape[1]]   # (s, d) broadcast over B
    B, m = input_ids.shape[0], adapter.prompt_length
    x = torch.cat([adapter.prompt.expand(B, -1, -1), embeds], dim=1)   # (B, m + s, d)
    mask = torch.cat([attention_mask.new_ones(B, m), attention_mask], dim=1)
    return model.base_model(inputs_embeds=x, attention_mask=mask, labels=labels)


def padding_benchmark(base, tokenizer, examples: list, *, batch_size: int, s: int = 256, m: int = 60,
                      vanilla_length: int = 100, warmup: int = 1) -> dict:
    """Examples per second of both policies, forward (eval) and training step, batch by
    batch with the policies interleaved. Returns totals and the columns each computed."""
    d = base.get_input_embeddings().embedding_dim
    r = solve_budget(vanilla_length, s, d, prompt_length=m).rank
    config = DeptConfig(prompt_length=m, rank=r, max_length=s, prompt_init="random", seed=0)
    model = DeptModel(base, config, family="seq2seq")
    optimizer = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=0.3)
    collators = {"dynamic": Collator(tokenizer, SEQ2SEQ, s),
                 "reference": Collator(tokenizer, SEQ2SEQ, s, pad_to_max_length=True)}
    ops = {"dynamic": lambda ids, mask, labels: model(ids, mask, labels=labels),
           "reference": lambda ids, mask, labels: reference_forward(model, ids, mask, labels)}

    seconds = {(p, phase): 0.0 for p in ops for phase in PHASES}
    columns = dict.fromkeys(ops, 0)
    done = 0
    starts = list(range(0, len(examples), batch_size))
    for i, start in enumerate([0] * warmup + starts):
        chunk = examples[start:start + batch_size]
        batches = {p: [collators[p](chunk)[k] for k in ("input_ids", "attention_mask", "labels")] for p in ops}
        order = list(ops) if i % 2 == 0 else list(ops)[::-1]  # neither policy always goes first
        for phase in PHASES:
            base.train(phase == "train")
            for p in order:
                t0 = time.perf_counter()
                if phase == "eval":
                    with torch.inference_mode():
                        ops[p](*batches[p])
                else:
                    ops[p](*batches[p]).loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                if i >= warmup:
                    seconds[p, phase] += time.perf_counter() - t0
        if i < warmup:
            continue
        done += len(chunk)
        for p in ops:
            ids, mask, _ = batches[p]
            # Encoder columns computed: DeptModel packs to the longest row; the reference keeps s.
            width = int(mask.sum(1).max()) if p == "dynamic" else ids.shape[1]
            columns[p] += ids.shape[0] * (m + width)
    base.eval()
    out = {"examples": done, "batch_size": batch_size, "s": s, "m": m, "r": r}
    for p in ops:
        out[p] = {phase: {"seconds": seconds[p, phase], "examples_per_s": done / seconds[p, phase]}
                  for phase in PHASES}
        out[p]["columns_per_example"] = columns[p] / done
    out["speedup"] = {phase: out["dynamic"][phase]["examples_per_s"] / out["reference"][phase]["examples_per_s"]
                      for phase in PHASES}
    return out
