"""The shared prefix against the laid-out rows (decoder-only), and the floors it is judged by.

One cell is (lengths, batch size): real SST-2 or RTE dev rows through dept's own template
and Collator, or every row exactly s=128 tokens. In each cell, for PT (l=100) and DePT
(m=40, 60; r from the l=100 budget), with the prompt shared and laid out, side by side and
interleaved: the training step (forward on the target tokens, backward, AdamW), its peak
tensor memory, rank classification of the task's two label words (the persistent prompt
cache warm, as in evaluation) and greedy generation of GENERATED tokens. The floors are the
frozen base on the input tokens alone: forward (rank, generation) and forward + backward
with respect to the input embeddings (training).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from statistics import median

import torch
from torch import Tensor

import _common as C

SETUPS = (("PT", 100, True), ("DePT m=40", 40, False), ("DePT m=60", 60, False))
"""(name, m, rank 0?); DePT's r comes from the budget l = 100 at s = 128."""
S = 128
GENERATED = 8
"""New tokens per generation (min = max, so every configuration generates as many)."""


@dataclass
class Cell:
    lengths: str
    """"SST-2", "RTE" (real dev rows) or "s=128" (every source exactly 126 tokens + a 2-token target)."""
    batch_size: int


@dataclass
class Batches:
    train: tuple[Tensor, Tensor, Tensor, Tensor]
    """input_ids, attention_mask, labels, source_mask (B, T), source and target laid out, left-padded."""
    sources: tuple[Tensor, Tensor]
    """input_ids, attention_mask (B, T_s): the sources alone, for rank and generation."""
    candidates: list[list[int]]
    """Token ids of each label word (+ end of sequence)."""
    tokens_per_row: float
    """Mean attended tokens per training row."""


def real_batches(task: str, batch_size: int, tokenizer, data_dir: Path, seed: int = 0) -> Batches:
    """`batch_size` dev rows drawn at random (a fixed seed) through the CLI's own Collator."""
    from _padding import TASKS, read_task

    from dept.data import Collator
    from dept.families import CAUSAL
    from dept.tasks import candidate_targets

    words = candidate_targets(TASKS[task])  # the task's label words, in class order
    examples = read_task(data_dir, task, None)  # the official dev file, as the padding check reads it
    chunk = random.Random(seed).sample(examples, batch_size)
    collator = Collator(tokenizer, CAUSAL, S)
    batch = collator(chunk)
    sources = collator.source_batch(chunk)
    train = tuple(batch[k] for k in ("input_ids", "attention_mask", "labels", "source_mask"))
    return Batches(train, (sources["input_ids"], sources["attention_mask"]),
                   [collator.target_ids(w) for w in words], float(batch["attention_mask"].sum(1).float().mean()))


def full_batches(batch_size: int, vocab: int, eos: int, seed: int = 0) -> Batches:
    """Every row s=128 real tokens: 126 of source and a 2-token target."""
    g = torch.Generator().manual_seed(seed)
    source = torch.randint(3, min(vocab, 32000), (batch_size, S - 2), generator=g)
    target = torch.tensor([[5, eos]] * batch_size)
    ids = torch.cat([source, target], dim=1)
    mask = torch.ones_like(ids)
    labels = torch.cat([torch.full_like(source, -100), target], dim=1)
    source_mask = torch.cat([torch.ones_like(source), torch.zeros_like(target)], dim=1)
    return Batches((ids, mask, labels, source_mask), (source, torch.ones_like(source)),
                   [[5, eos], [7, eos]], float(S))


class Runner:
    """A DeptModel's training step, rank classification and generation, the prompt shared or
    laid out; `floor_*` is the frozen base on the input tokens alone (no prompt, no update)."""

    def __init__(self, model, lr: float = 0.03):
        self.model = model
        self.optimizer = torch.optim.AdamW([p for _, p in model.trainable_parameters()], lr=lr)

    def train_step(self, batch: Batches, share: bool) -> float:
        ids, mask, labels, source_mask = batch.train
        self.model.share_prefix = share
        self.model.train()
        loss = self.model(ids, mask, labels=labels, source_mask=source_mask, trim_logits=True).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    @torch.no_grad()
    def rank(self, batch: Batches, share: bool) -> Tensor:
        self.model.share_prefix = share
        self.model.eval()
        return self.model.score_candidates(*batch.sources, batch.candidates)

    def generate(self, batch: Batches, share: bool) -> Tensor:
        self.model.share_prefix = share
        self.model.eval()
        return self.model.generate(*batch.sources, max_new_tokens=GENERATED, min_new_tokens=GENERATED,
                                   do_sample=False)

    def floor_train(self, batch: Batches) -> None:
        """Forward + backward of the frozen base on the input tokens, gradient to the embeddings,
        vocabulary logits only where a target is predicted (as DeptModel's trim_logits does:
        the full (B, T, 49k) projection would make the floor slower than the work it bounds)."""
        from dept.scoring import target_window

        ids, mask, labels, _ = batch.train
        base = self.model.base_model
        base.train()
        embeds = base.get_input_embeddings()(ids).detach().requires_grad_(True)
        k = target_window(labels)
        logits = base(inputs_embeds=embeds, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                      logits_to_keep=k).logits[:, :-1]                  # (B, k-1, V)
        targets = labels[:, labels.shape[1] - k + 1:]                   # (B, k-1)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                          ignore_index=-100).backward()

    @torch.no_grad()
    def floor_rank(self, batch: Batches) -> Tensor:
        from dept import scoring

        ids, mask = batch.sources
        base = self.model.base_model
        base.eval()
        prepared = {"inputs_embeds": base.get_input_embeddings()(ids), "attention_mask": mask,
                    "position_ids": (mask.cumsum(1) - 1).clamp(min=0)}
        return scoring.score_candidates(base, prepared, batch.candidates, labels_in_input=True, keeps_logits=True)

    @torch.no_grad()
    def floor_generate(self, batch: Batches) -> Tensor:
        base = self.model.base_model
        base.eval()
        ids, mask = batch.sources
        pad = self.model.tokenizer.pad_token_id
        return base.generate(input_ids=ids, attention_mask=mask, max_new_tokens=GENERATED,
                             min_new_tokens=GENERATED, do_sample=False, pad_token_id=pad)


def build_runners(base, tokenizer, setups=SETUPS) -> dict[str, tuple[Runner, int, int]]:
    """One DeptModel per setup on the one shared base, its tensors nudged off their init."""
    from dept.budget import solve_budget
    from dept.config import DeptConfig
    from dept.model import DeptModel

    d = base.get_input_embeddings().embedding_dim
    runners = {}
    for name, m, pt in setups:
        r = 0 if pt else solve_budget(100, S, d, prompt_length=m).rank
        model = DeptModel(base, DeptConfig(prompt_length=m, rank=r, max_length=S, prompt_init="random"),
                          tokenizer=tokenizer)
        with torch.no_grad():  # B = 0 at init; a trained-looking update costs the same and is not a no-op
            for _, _, p in model.dept_adapters["default"].adapter_params():
                p.add_(torch.randn_like(p) * 1e-3)
        runners[name] = (Runner(model), m, r)
    return runners


def measure_cell(base, tokenizer, runners, cell: Cell, data_dir: Path, repeats: int, warmup: int = 1) -> dict:
    """Every setup shared and laid out against the floors, on one batch."""
    if cell.lengths == "s=128":
        batch = full_batches(cell.batch_size, base.config.vocab_size, tokenizer.eos_token_id)
    else:
        batch = real_batches(cell.lengths, cell.batch_size, tokenizer, data_dir)
    floor = next(iter(runners.values()))[0]
    ops = {"step": ("train_step", floor.floor_train), "rank": ("rank", floor.floor_rank),
           "generate": ("generate", floor.floor_generate)}
    times = {}
    for op, (method, floor_fn) in ops.items():
        fns = {"floor": partial(floor_fn, batch)}
        for name, (runner, _, _) in runners.items():
            for share, label in ((True, "shared"), (False, "laid-out")):
                fns[f"{name} {label}"] = partial(getattr(runner, method), batch, share)
        with torch.set_grad_enabled(op == "step"):
            times[op] = C.time_interleaved(fns, warmup, repeats)
    memory = {"floor": C.peak_tensor_mb(partial(floor.floor_train, batch))}
    for name, (runner, _, _) in runners.items():
        for share, label in ((True, "shared"), (False, "laid-out")):
            memory[f"{name} {label}"] = C.peak_tensor_mb(partial(runner.train_step, batch, share))
    out = {"lengths": cell.lengths, "batch_size": cell.batch_size, "tokens_per_row": batch.tokens_per_row,
           "repeats": repeats, "floor": {op: times[op]["floor"] for op in ops} | {"train_peak_mb": memory["floor"]},
           "configs": {}}
    f = {op: median(times[op]["floor"]) for op in ops}
    for name, (_, m, r) in runners.items():
        row: dict = {"m": m, "r": r}
        for label in ("shared", "laid-out"):
            key = f"{name} {label}"
            row[label] = {op: times[op][key] for op in ops} | {"train_peak_mb": memory[key]}
        sh, lo = row["shared"], row["laid-out"]
        row["ratios"] = {
            "step_shared_over_laid_out": median(sh["step"]) / median(lo["step"]),
            "step_shared_over_floor": median(sh["step"]) / f["step"],
            "step_laid_out_over_floor": median(lo["step"]) / f["step"],
            "memory_shared_over_laid_out": sh["train_peak_mb"] / lo["train_peak_mb"],
            "rank_shared_over_floor": median(sh["rank"]) / f["rank"],
            "rank_laid_out_over_floor": median(lo["rank"]) / f["rank"],
            "rank_shared_over_laid_out": median(sh["rank"]) / median(lo["rank"]),
            "generate_shared_over_floor": median(sh["generate"]) / f["generate"],
            "generate_shared_over_laid_out": median(sh["generate"]) / median(lo["generate"]),
        }
        out["configs"][name] = row
    return out


def measure_scale(model: str, data_dir: Path, batch_size: int = 8, repeats: int = 3, warmup: int = 1) -> dict:
    """DePT (m=60) against PT (l=100) on one model at SST-2 lengths: training step time and
    peak tensor memory, the prompt shared (as dept trains) and laid out."""
    base, _, _, tokenizer = C.load_model(model)
    runners = build_runners(base, tokenizer, [s for s in SETUPS if s[0] in ("PT", "DePT m=60")])
    batch = real_batches("SST-2", batch_size, tokenizer, data_dir)
    fns = {f"{name} {label}": partial(runner.train_step, batch, share) for name, (runner, _, _) in runners.items()
           for share, label in ((True, "shared"), (False, "laid-out"))}
    times = C.time_interleaved(fns, warmup, repeats)
    memory = {key: C.peak_tensor_mb(fn) for key, fn in fns.items()}
    d = base.get_input_embeddings().embedding_dim
    out = {"model": model, "hidden_size": d, "parameters": sum(p.numel() for p in base.parameters()),
           "batch_size": batch_size, "tokens_per_row": batch.tokens_per_row, "step_s": times, "train_peak_mb": memory}
    for label in ("shared", "laid-out"):
        out[f"dept_over_pt_step_{label}"] = median(times[f"DePT m=60 {label}"]) / median(times[f"PT {label}"])
        out[f"dept_over_pt_memory_{label}"] = memory[f"DePT m=60 {label}"] / memory[f"PT {label}"]
    return out


def profile_step(step: Callable[[], object], top: int = 12) -> list[dict]:
    """Where one training step's time goes: the profiler's operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    step()  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
             "calls": e.count} for e in events[:top]]


def markdown(result: dict) -> str:
    """The cells as tables of medians and ratios; the targets as hit or miss."""
    lines = [f"# Shared prefix vs laid-out rows ({result['model']}, {result['mode']} mode)", "",
             f"`{result['command']}`, {result['wall_time_s'] / 60:.1f} min, {result['machine']['threads']} threads, "
             f"medians of {result['repeats']} interleaved repeats after 1 warm-up. Floor: the frozen model on the "
             f"input tokens alone. Rank: 2 label words, prompt cache warm. Generation: {GENERATED} greedy tokens.", ""]
    for cell in result["cells"]:
        fl = cell["floor"]
        b = cell["batch_size"]
        lines += [f"## {cell['lengths']} lengths, batch {b} (~{cell['tokens_per_row']:.0f} tokens per row)", "",
                  "| config | step shared (s) | step laid-out (s) | shared / laid-out | shared / floor | "
                  "peak MB shared | peak MB laid-out | eval ex/s shared | eval ex/s laid-out | eval / floor | "
                  "gen ex/s shared | gen ex/s laid-out | gen / floor |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, c in cell["configs"].items():
            sh, lo, q = c["shared"], c["laid-out"], c["ratios"]
            lines.append(
                f"| {name} | {median(sh['step']):.3f} | {median(lo['step']):.3f} | "
                f"**{q['step_shared_over_laid_out']:.2f}** | {q['step_shared_over_floor']:.2f} | "
                f"{sh['train_peak_mb']:.0f} | {lo['train_peak_mb']:.0f} | {b / median(sh['rank']):.1f} | "
                f"{b / median(lo['rank']):.1f} | **{q['rank_shared_over_floor']:.2f}** | "
                f"{b / median(sh['generate']):.1f} | {b / median(lo['generate']):.1f} | "
                f"{q['generate_shared_over_floor']:.2f} |")
        lines += ["", f"Floor: training step (fwd+bwd to the inputs) {median(fl['step']):.3f} s, "
                  f"{fl['train_peak_mb']:.0f} MB; evaluation {b / median(fl['rank']):.1f} ex/s; "
                  f"generation {b / median(fl['generate']):.1f} ex/s.", ""]
    lines += ["## Targets", "", "| target | cell | config | measured | hit |", "| --- | --- | --- | --- | --- |"]
    for t in result["targets"]:
        lines.append(f"| {t['target']} | {t['cell']} | {t['config']} | {t['value']:.2f} | "
                     f"{'yes' if t['hit'] else 'no'} |")
    if result.get("profile"):
        lines += ["", f"## Profile: {result['profile']['what']}", "",
                  "| operator | self ms shared | share | self ms floor | share |", "| --- | --- | --- | --- | --- |"]
        floor = {e["op"]: e for e in result["profile"]["floor"]}
        for e in result["profile"]["shared"]:
            f = floor.get(e["op"])
            lines.append(f"| `{e['op']}` | {e['self_ms']:.0f} | {e['share']:.0%} | "
                         f"{f['self_ms'] if f else 0:.0f} | {f['share'] if f else 0:.0%} |")
    return "\n".join(lines) + "\n"


def targets(cells: list[dict]) -> list[dict]:
    """The issue's targets, for every cell and setup they apply to."""
    out = []
    for cell in cells:
        where = f"{cell['lengths']} b{cell['batch_size']}"
        for name, c in cell["configs"].items():
            q = c["ratios"]
            if cell["lengths"] == "SST-2" and name.startswith("DePT"):
                out.append({"target": "training step shared <= 0.45x laid-out", "cell": where, "config": name,
                            "value": q["step_shared_over_laid_out"], "hit": q["step_shared_over_laid_out"] <= 0.45})
            out.append({"target": "evaluation (rank) with cache <= 1.15x floor", "cell": where, "config": name,
                        "value": q["rank_shared_over_floor"], "hit": q["rank_shared_over_floor"] <= 1.15})
            out.append({"target": "training peak memory shared <= laid-out", "cell": where, "config": name,
                        "value": q["memory_shared_over_laid_out"], "hit": q["memory_shared_over_laid_out"] <= 1.0})
    return out
