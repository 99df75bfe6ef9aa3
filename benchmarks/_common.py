"""What the efficiency benchmark times: models, batches, and one runner per configuration.

A configuration (`Setup`) is one way a user could spend the step: the frozen model with
no prompt or with m extra tokens (the floors), our prompt tuning (DePT with r=0), PEFT's
PromptTuningConfig (the peer), or DePT at the same parameter budget. Every runner of a
model shares one frozen base, so weights, batches and threads are identical across them.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from dept.budget import solve_budget
from dept.config import DeptConfig
from dept.model import DeptModel

T5_SHAPES = {  # the published architectures; weights are random (timing does not depend on them)
    "t5-small": dict(d_model=512, num_layers=6, num_decoder_layers=6, num_heads=8, d_ff=2048, d_kv=64),
    "t5-base": dict(d_model=768, num_layers=12, num_decoder_layers=12, num_heads=12, d_ff=3072, d_kv=64),
    "t5-tiny": dict(d_model=32, num_layers=2, num_decoder_layers=2, num_heads=2, d_ff=64, d_kv=16),  # tests
}
SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3-270m"
PACKAGED_DECODERS = (SMOLLM2, GEMMA3)
LABEL_TOKENS = 4   # a classification target ("positive </s>" and the like)
CANDIDATE_TOKENS = 2
NEW_TOKENS = 3


@dataclass(frozen=True)
class Setup:
    kind: str
    """'frozen' (base + m frozen-model extra tokens), 'pt' (ours, r=0), 'peft', 'dept'."""
    m: int
    """Soft prompt length (extra tokens for 'frozen')."""
    r: int = 0

    @property
    def name(self) -> str:
        if self.kind == "frozen":
            return "frozen" if self.m == 0 else f"frozen+{self.m}"
        return {"pt": f"pt-{self.m}", "peft": f"peft-pt-{self.m}"}.get(self.kind, f"dept-{self.m}")


def setups(s: int, d: int, prompt_lengths=(40, 60, 80), vanilla_length: int = 100) -> list[Setup]:
    """The floors, both prompt tunings at l, and DePT at l's budget for each m. Each DePT
    sits right after its floor "frozen + m": interleaved, the pair runs back to back."""
    out = [Setup("frozen", 0)]
    for m in prompt_lengths:
        out += [Setup("frozen", m), Setup("dept", m, solve_budget(vanilla_length, s, d, prompt_length=m).rank)]
    return out + [Setup("frozen", vanilla_length), Setup("pt", vanilla_length), Setup("peft", vanilla_length)]


def save_t5(model: str, directory: str | Path, vocab_size: int | None = None, seed: int = 0) -> str:
    """Build a random-weight T5 of a published shape once and save it, so that every
    process (timing and each memory child) loads the very same weights quickly."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(**T5_SHAPES[model], vocab_size=vocab_size or 32128,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    path = Path(directory) / f"{model}-v{config.vocab_size}"
    if not (path / "config.json").is_file():
        T5ForConditionalGeneration(config).save_pretrained(path)
    return str(path)


def load_tokenizer(name: str = SMOLLM2):
    """SmolLM2's tokenizer: the only T5-like (subword, real) tokenizer available offline."""
    from transformers import AutoTokenizer

    from dept.pretrained import resolve

    return AutoTokenizer.from_pretrained(resolve(name))


def quiet_libraries() -> None:
    """No warnings or progress bars from transformers and friends in benchmark output."""
    import warnings

    import transformers

    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_model(source: str):
    """(frozen base, family name, pad id, tokenizer or None) from a packaged decoder or a save_t5 folder."""
    if source in PACKAGED_DECODERS:
        from dept.pretrained import load_base

        base, tokenizer, family = load_base(source)
        return base, family.name, tokenizer.pad_token_id, tokenizer
    from transformers import T5ForConditionalGeneration

    base = T5ForConditionalGeneration.from_pretrained(source)
    base.requires_grad_(False)
    return base, "seq2seq", base.config.pad_token_id, None


@dataclass
class Batch:
    source: Tensor
    """(B, s) input ids, all real tokens so s is exactly the compute that matters."""
    target: Tensor
    """(B, LABEL_TOKENS) the training target."""
    candidates: list[list[int]]
    """Rank classification: the class targets (the same for every row), CANDIDATE_TOKENS ids each."""


def make_batch(batch_size: int, s: int, vocab: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    ids = lambda *shape: torch.randint(3, min(vocab, 32000), shape, generator=g)  # noqa: E731
    return Batch(ids(batch_size, s), ids(batch_size, LABEL_TOKENS),
                 ids(2, CANDIDATE_TOKENS).tolist())


class Runner:
    """One configuration's training step, generation and rank classification."""

    def __init__(self, base: nn.Module, family: str, setup: Setup, s: int, pad_id: int, lr: float = 0.3):
        self.base, self.setup, self.pad_id = base, setup, pad_id
        self.causal = family == "causal"
        self.model: nn.Module | None = None
        self.prompt: nn.Parameter | None = None
        if setup.kind in ("pt", "dept"):
            config = DeptConfig(prompt_length=setup.m, rank=setup.r, max_length=s,
                                prompt_init="random", seed=0)
            self.model = DeptModel(base, config, family=family)
            params = [p for _, p in self.model.trainable_parameters()]
        elif setup.kind == "peft":
            from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

            task = TaskType.CAUSAL_LM if self.causal else TaskType.SEQ_2_SEQ_LM
            self.model = get_peft_model(base, PromptTuningConfig(
                task_type=task, num_virtual_tokens=setup.m, prompt_tuning_init=PromptTuningInit.RANDOM))
            params = [p for p in self.model.parameters() if p.requires_grad]
        else:
            table = base.get_input_embeddings().weight
            g = torch.Generator().manual_seed(0)
            # The m extra rows train, as a prompt would, so the backward pass reaches the input.
            self.prompt = nn.Parameter(torch.randn(setup.m, table.shape[1], generator=g)
                                       * table.detach().pow(2).mean().sqrt()) if setup.m else None
            params = [self.prompt] if setup.m else []
        # No optimiser for the no-prompt floor: it has nothing to update (see docs).
        self.optimizer = torch.optim.AdamW(params, lr=lr) if params else None

    # ----- one call per configuration kind --------------------------------------------
    def _forward(self, ids: Tensor, labels: Tensor | None = None, source_mask: Tensor | None = None,
                 **kwargs):
        mask = torch.ones_like(ids)
        if self.setup.kind in ("pt", "dept"):
            return self.model(ids, mask, labels=labels, source_mask=source_mask, **kwargs)
        if self.setup.kind == "peft":
            return self.model(input_ids=ids, attention_mask=mask, labels=labels, **kwargs)
        x, mask, labels = self._frozen_inputs(ids, mask, labels)
        return self.base(inputs_embeds=x, attention_mask=mask, labels=labels, **kwargs)

    def _frozen_inputs(self, ids: Tensor, mask: Tensor, labels: Tensor | None):
        x = self.base.get_input_embeddings()(ids)                      # (B, T, d)
        if self.prompt is None:
            # The no-prompt floor: gradients flow to the input embeddings, so its backward
            # pass is as deep as prompt tuning's (the model has nothing else to train).
            return x.detach().requires_grad_(torch.is_grad_enabled()), mask, labels
        B, m = ids.shape[0], self.setup.m
        x = torch.cat([self.prompt.expand(B, -1, -1), x], dim=1)        # (B, m + T, d)
        mask = torch.cat([mask.new_ones(B, m), mask], dim=1)
        if labels is not None and self.causal:
            labels = torch.cat([labels.new_full((B, m), -100), labels], dim=1)
        return x, mask, labels

    def train_step(self, batch: Batch) -> float:
        """Forward, backward, optimiser step; returns the loss."""
        if not self.causal:
            loss = self._forward(batch.source, batch.target).loss
        else:  # the target follows the source; only the target is scored
            ids = torch.cat([batch.source, batch.target], dim=1)
            labels = torch.cat([torch.full_like(batch.source, -100), batch.target], dim=1)
            loss = self._causal_loss(ids, labels, batch.target)
        loss.backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().item()

    def _causal_loss(self, ids: Tensor, labels: Tensor, target: Tensor) -> Tensor:
        if self.setup.kind in ("pt", "dept"):
            # As dept's training loop calls it: vocabulary logits only at target positions.
            return self._forward(ids, labels, trim_logits=True).loss
        if self.setup.kind == "peft":
            return self._forward(ids, labels).loss  # what PEFT offers: logits everywhere
        # The floor gets the same saving as ours, so "DePT vs floor" compares like with like.
        t = target.shape[1]
        logits = self._forward(ids, logits_to_keep=t + 1).logits[:, :-1]   # (B, t, V)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    def input_step(self, batch: Batch) -> None:
        """Only the work that differs between configurations of equal token count: build
        the model's input (prompt, low-rank update, layout), backpropagate a stand-in loss
        to it, step the optimiser. Timed alone it resolves overheads of a few ms that the
        noise of a whole step hides."""
        ids, mask = batch.source, torch.ones_like(batch.source)
        if self.setup.kind in ("pt", "dept"):
            x = self.model.prepare_inputs(ids, mask)["inputs_embeds"]
        elif self.setup.kind == "peft":
            prompts = self.model.get_prompt(batch_size=ids.shape[0])[:, : self.setup.m]
            x = torch.cat([prompts, self.model.word_embeddings(ids)], dim=1)
        else:
            x = self._frozen_inputs(ids, mask, None)[0]
        x.sum().backward()
        if self.optimizer is not None:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def generate(self, batch: Batch) -> Tensor:
        """Greedy, exactly NEW_TOKENS new tokens for every configuration."""
        kw = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                  pad_token_id=self.pad_id)
        ids, mask = batch.source, torch.ones_like(batch.source)
        if self.setup.kind in ("pt", "dept"):
            return self.model.generate(ids, mask, **kw)
        if self.setup.kind == "peft":
            return self.model.generate(input_ids=ids, attention_mask=mask, **kw)
        x, mask, _ = self._frozen_inputs(ids, mask, None)
        return self.base.generate(inputs_embeds=x, attention_mask=mask, **kw)

    @torch.inference_mode()
    def rank(self, batch: Batch) -> Tensor:
        """Rank classification done simply, the same way for every configuration: one
        forward per candidate with it as the target, lowest loss wins. (B,)"""
        losses = []
        for cand in batch.candidates:
            cand = torch.tensor(cand).repeat(batch.source.shape[0], 1)    # (B, t)
            t = cand.shape[1]
            if self.causal:
                ids = torch.cat([batch.source, cand], dim=1)
                source_mask = torch.cat([torch.ones_like(batch.source), torch.zeros_like(cand)], dim=1)
                extra = {"source_mask": source_mask} if self.setup.kind in ("pt", "dept") else {}
                # Only the t logits that predict the candidate: the LM head over all N is waste.
                logits = self._forward(ids, logits_to_keep=t + 1, **extra).logits[:, :t]
            else:
                logits = self._forward(batch.source, labels=cand).logits  # (B, t, V)
            losses.append(F.cross_entropy(logits.transpose(1, 2), cand, reduction="none").mean(1))
        return torch.stack(losses, dim=1).argmin(dim=1)

    @torch.inference_mode()
    def rank_api(self, batch: Batch) -> Tensor:
        """Ours only: dept's own rank classification (DeptModel.score_candidates), which
        encodes the source once for all candidates. (B,)"""
        ids = batch.source
        return self.model.score_candidates(ids, torch.ones_like(ids), batch.candidates).argmax(dim=1)


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per call, round-robin over configurations (A,B,C,C,B,A,...) so that drift in
    the machine's speed lands on every configuration alike; the first `warmup` rounds are
    discarded. The direction alternates so that no configuration always follows the same one."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(warmup + repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


# ----- peak memory ----------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_stderr():
    """Kineto logs two lines per profile straight to fd 2; keep the console readable."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_tensor_mb(fn: Callable[[], object]) -> float:
    """Peak of live tensor memory while fn runs, above what was live before (MB): the CPU
    analogue of torch.cuda.max_memory_allocated, from the profiler's allocation events.
    Deterministic, so a few percent can be compared; it does not see allocator slack."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.device_type() == torch.autograd.DeviceType.CPU and e.nbytes())
    live = peak = 0
    for _, nbytes in events:  # +bytes on allocation, -bytes on free
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _release_and_reset_peak() -> None:
    """Give freed heap back to the OS, then restart the kernel's peak-RSS counter (VmHWM)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the measurement then includes whatever the allocator keeps
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_child(source: str, s: int, setup: Setup, batch_size: int, threads: int) -> dict[str, float]:
    """Run in a fresh process (peak RSS only ever grows within one): build, take a warm-up
    step (lazy init, optimiser state), then report the peak RSS of a second step above the
    RSS just before it (MB). What the OS sees, allocator slack included; noisier than
    peak_tensor_mb."""
    torch.set_num_threads(threads)
    quiet_libraries()
    base, family, pad_id, _ = load_model(source)
    runner = Runner(base, family, setup, s, pad_id)
    batch = make_batch(batch_size, s, base.config.vocab_size)
    base.train()
    runner.train_step(batch)
    _release_and_reset_peak()
    before = _status_kb("VmRSS")
    runner.train_step(batch)
    return {"rss_peak_mb": (_status_kb("VmHWM") - before) / 1024, "rss_resident_mb": before / 1024}
