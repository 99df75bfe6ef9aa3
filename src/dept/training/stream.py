"""The order in which training examples are seen: a seeded permutation per epoch, as a stream.

Position p of the stream is example perm_{p // n}[p % n]. A step's examples are a slice
of the stream, so the data position after k steps is a number (k · global batch):
resuming needs no iterator state, and N processes reading interleaved slices see
exactly the examples one process with an N-times larger batch would.
"""

from __future__ import annotations

from functools import lru_cache

import torch


@lru_cache(maxsize=4)
def _permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return tuple(torch.randperm(n, generator=g).tolist())


def stream_indices(start: int, count: int, n: int, seed: int) -> list[int]:
    """Indices of stream positions start .. start + count - 1 over a dataset of n examples."""
    if n <= 0:
        raise ValueError("the training set is empty")
    return [_permutation(n, seed, pos // n)[pos % n] for pos in range(start, start + count)]


def micro_batch_start(step: int, micro: int, rank: int, *, batch: int, world: int, accumulation: int) -> int:
    """Stream position of process `rank`'s micro-batch `micro` of optimiser step `step` (0-based)."""
    return ((step * accumulation + micro) * world + rank) * batch
