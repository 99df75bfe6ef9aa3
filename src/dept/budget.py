"""The parameter budget rule of DePT: l·d = m·d + (s + d)·r.

Given a vanilla prompt length l, the input length s and the hidden size d, choose the
DePT prompt length m for a rank r, or the rank r for a prompt length m, so that DePT
trains as many parameters as vanilla prompt tuning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import UserError


class BudgetError(UserError, ValueError):
    """No DePT shape fits the requested budget."""


@dataclass(frozen=True)
class Budget:
    prompt_length: int
    """m: DePT's soft prompt length."""
    rank: int
    """r: rank of the low-rank pair."""
    max_length: int
    hidden_size: int
    vanilla_length: int
    trainable_params: int
    """m·d + (s + d)·r."""
    vanilla_params: int
    """l·d."""
    exact: bool
    """True when trainable_params == vanilla_params; else the closest shape under budget."""

    def to_dict(self) -> dict:
        return asdict(self)


def trainable_params(prompt_length: int, rank: int, max_length: int, hidden_size: int) -> int:
    """m·d + (s + d)·r: the prompt (m x d) and the pair A (s x r), B (r x d); a head is extra."""
    return prompt_length * hidden_size + (max_length + hidden_size) * rank


def round_prompt(prompt_length: int, multiple: int | None) -> int:
    """m rounded down to a multiple of `multiple` (None or 1: unchanged)."""
    if multiple is None or multiple <= 1:
        return prompt_length
    return prompt_length // multiple * multiple


def solve_budget(vanilla_length: int, max_length: int, hidden_size: int, *,
                 rank: int | None = None, prompt_length: int | None = None,
                 prompt_multiple: int | None = None) -> Budget:
    """Solve l·d = m·d + (s + d)·r for the one of m (`prompt_length`) or r (`rank`) not given.

    Where no integer solves it exactly, returns the closest shape that stays under the
    budget (`exact=False`): m rounded down for a given r, r rounded down for a given m.
    `prompt_multiple` k: m is rounded down to a multiple of k first (an engine that caches the
    prompt by blocks of k vectors, as vLLM's prefix cache does with 16, caches all of it), and
    r is then solved from what is left when r was not given.
    """
    l, s, d = vanilla_length, max_length, hidden_size
    for name, value in (("vanilla_length", l), ("max_length", s), ("hidden_size", d)):
        if value <= 0:
            raise BudgetError(f"{name} must be > 0, got {value}")
    if (rank is None) == (prompt_length is None):
        raise BudgetError("give exactly one of rank or prompt_length; the other is solved for")
    budget = l * d
    if rank is not None:
        if rank < 0:
            raise BudgetError(f"rank must be >= 0, got {rank}")
        remaining = budget - (s + d) * rank  # what is left for the prompt: m·d
        if remaining < 0:
            raise BudgetError(f"rank {rank} alone costs (s+d)·r = {(s + d) * rank} > budget l·d = {budget}; "
                              f"the largest rank within budget is {budget // (s + d)}")
        m, r = round_prompt(remaining // d, prompt_multiple), rank
    else:
        if not 0 <= prompt_length <= l:
            raise BudgetError(f"prompt_length must be in [0, {l}] (the vanilla length), got {prompt_length}")
        m = round_prompt(prompt_length, prompt_multiple)
        r = (budget - m * d) // (s + d)
    # A (s x r) and B (r x d) cannot have rank above min(s, d): DeptConfig would refuse the shape.
    if r > min(s, d):
        fix = f"give a rank <= {min(s, d)}" if rank is not None else \
            f"prompt_length {m} leaves budget for rank {r}: give a larger prompt_length"
        raise BudgetError(f"rank {r} exceeds min(max_length, hidden_size) = {min(s, d)}; {fix}")
    if m == 0 and r == 0:
        raise BudgetError(f"the budget l·d = {budget} is below one rank's cost (s+d) = {s + d} "
                          f"and prompt_length is 0: nothing would train")
    used = trainable_params(m, r, s, d)
    return Budget(prompt_length=m, rank=r, max_length=s, hidden_size=d, vanilla_length=l,
                  trainable_params=used, vanilla_params=budget, exact=used == budget)
