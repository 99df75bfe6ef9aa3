"""Turning model outputs into labels, and labels into metrics.

Two decoders for generative models:
  generate  greedy decoding of the target text (the paper); may produce an invalid label,
            which the metrics count as wrong.
  rank      score every candidate target by its summed log-likelihood and take the best
            (never an invalid label). Needs the task's candidate list.
Encoder models read their head: argmax over classes, or the regression value.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .data import Collator, ExampleLike
from .tasks.meta import DECODERS


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict(model, collator: Collator, examples: Sequence[ExampleLike], *, decoder: str = "rank",
            candidates: Sequence[str] | None = None, batch_size: int = 32, max_new_tokens: int = 16,
            device=None, score_range: tuple[float, float] | None = None) -> list[str]:
    """One prediction string per example, in the task's target words. `score_range`: a
    regression head's outputs are clipped to it (5.02 on a 0-5 scale means 5, not an
    invalid answer that the metrics would score as the far end of the scale)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    predictions: list[str] = []
    try:
        for chunk in _batches(list(examples), batch_size):
            if collator.family.has_head:
                predictions += _predict_head(model, collator, chunk, candidates, device, score_range)
            elif decoder == "rank" and candidates:
                predictions += _predict_rank(model, collator, chunk, candidates, device)
            else:
                batch = _to_device(collator.source_batch(chunk), device)
                new_tokens = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
                texts = collator.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
                predictions += [t.strip() for t in texts]
    finally:
        model.train(was_training)
    return predictions


def _predict_rank(model, collator: Collator, chunk, candidates, device) -> list[str]:
    if hasattr(model, "score_candidates"):
        # DePT: the source is encoded once and shared by every candidate.
        batch = _to_device(collator.source_batch(chunk), device)
        scores = model.score_candidates(batch["input_ids"], batch["attention_mask"],
                                        [collator.target_ids(c) for c in candidates])
    else:
        batch = _to_device(collator.scoring_batch(chunk, candidates), device)
        scores = model.score(**batch).view(len(chunk), len(candidates))  # (B, C)
    return [candidates[i] for i in scores.argmax(dim=1).tolist()]


def _predict_head(model, collator: Collator, chunk, candidates, device, score_range=None) -> list[str]:
    logits = model(**_to_device(collator.source_batch(chunk), device)).logits  # (B, C) or (B, 1)
    if logits.shape[-1] == 1:
        scores = logits.squeeze(-1).float()
        if score_range is not None:
            scores = scores.clamp(*score_range)
        return [f"{v:.3f}" for v in scores.tolist()]
    if not candidates:
        return [str(i) for i in logits.argmax(dim=1).tolist()]
    return [candidates[i] for i in logits.argmax(dim=1).tolist()]


def evaluate(model, collator: Collator, task: str, examples: Sequence[ExampleLike], *,
             decoder: str = "rank", target_words: str = "natural", batch_size: int = 32,
             max_new_tokens: int = 16, device=None, qa_scoring: str | None = None) -> dict[str, float]:
    """The task's metrics for `examples` (every example counts; invalid predictions are wrong).
    `qa_scoring`: extractive QA against the first or all gold answers (tasks.metrics)."""
    return evaluate_with_predictions(model, collator, task, examples, decoder=decoder, target_words=target_words,
                                     batch_size=batch_size, max_new_tokens=max_new_tokens, device=device,
                                     qa_scoring=qa_scoring)[0]


def evaluate_with_predictions(model, collator: Collator, task: str, examples: Sequence[ExampleLike], *,
                              decoder: str = "rank", target_words: str = "natural", batch_size: int = 32,
                              max_new_tokens: int = 16, device=None,
                              qa_scoring: str | None = None) -> tuple[dict[str, float], list[str]]:
    """`evaluate`, and the prediction for each example in order (what a bootstrap over
    examples resamples)."""
    from .tasks import candidate_targets, compute_metrics

    candidates = candidate_targets(task, target_words)
    predictions = predict(model, collator, examples, decoder=decoder, candidates=candidates,
                          batch_size=batch_size, max_new_tokens=max_new_tokens, device=device,
                          score_range=regression_range(task))
    return compute_metrics(task, predictions, examples, qa_scoring=qa_scoring), predictions


def regression_range(task: str) -> tuple[float, float] | None:
    """The score scale of a regression task (STS-B: 0 to 5); None for other tasks."""
    from .tasks import get_task

    spec = get_task(task)
    return spec.score_range if spec.kind == "regression" else None
