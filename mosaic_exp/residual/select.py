"""Top-K block selection under a budget (fraction of blocks that keep their residual).

Decisions (also in docs/method.md):
  * K = floor(budget * num_blocks + 1e-9): the budget is a cap, rounded DOWN (the 1e-9 absorbs
    float error such as 0.29 * 100 = 28.999999999999996). budget must lie in [0, 1].
  * Only blocks with a finite, strictly positive score are eligible by default. A zero
    Delta-Hessian score means "keeping the block removes no error"; a negative output_exact
    score means keeping it makes the layer output worse. Spending bits on them is pure loss,
    so fewer than K blocks are kept when fewer than K are eligible (the chosen count is
    reported). ``allow_nonpositive=True`` restores "exactly K" (finite scores only; -inf, used
    by the "none" selector, is never selected).
  * Per-layer counts for a whole model (``allocate_counts``, residual.rounding=largest_remainder): flooring
    every layer's share keeps far less than the budget when layers have few blocks (SmolLM2 at 3 % with
    128x128 blocks: 25-block layers get 0, so 1.2 % of the model's blocks are kept). The largest-remainder
    rule gives each layer floor or ceil of its exact share budget * n_l, so that the model keeps exactly
    floor(budget * sum_l n_l) blocks, still chosen inside each layer by its own scores.
  * Ties are broken deterministically: equal scores keep their row-major block order (a stable
    descending sort), and in ``topk_global`` layers are concatenated in the dict's order.
"""

from __future__ import annotations

import math

import torch


def _check_budget(budget: float) -> float:
    budget = float(budget)
    if not 0.0 <= budget <= 1.0 or math.isnan(budget):
        raise ValueError(f"budget must be in [0, 1], got {budget}")
    return budget


def budget_count(budget: float, num_blocks: int) -> int:
    """K = floor(budget * num_blocks) (with a 1e-9 guard against float error)."""
    return min(num_blocks, math.floor(_check_budget(budget) * num_blocks + 1e-9))


def _eligible(flat: torch.Tensor, allow_nonpositive: bool) -> torch.Tensor:
    ok = torch.isfinite(flat)
    return ok if allow_nonpositive else ok & (flat > 0)


def _ranked(flat: torch.Tensor) -> torch.Tensor:
    """Indices sorted by score descending, ties by index ascending (stable sort, NaN last)."""
    key = torch.nan_to_num(flat.double(), nan=float("-inf"))
    return torch.sort(key, descending=True, stable=True).indices


def allocate_counts(num_blocks: dict[str, int], budget: float) -> dict[str, int]:
    """Per-layer K_l with sum_l K_l = floor(budget * sum_l n_l) and K_l in {floor, ceil}(budget * n_l):
    floors first, then one more block to the layers with the largest remainders (ties: dict order)."""
    budget = _check_budget(budget)
    names = list(num_blocks)
    if any(int(num_blocks[n]) < 0 for n in names):
        raise ValueError(f"negative block counts in {num_blocks}")
    total = budget_count(budget, sum(int(num_blocks[n]) for n in names))
    share = {n: budget * int(num_blocks[n]) for n in names}
    counts = {n: min(int(num_blocks[n]), math.floor(share[n] + 1e-9)) for n in names}
    rest = total - sum(counts.values())
    by_remainder = sorted(names, key=lambda n: -(share[n] - counts[n]))  # stable: dict order on ties
    for n in by_remainder[:max(rest, 0)]:
        counts[n] += 1
    return counts


def topk_per_layer(scores: torch.Tensor, budget: float, allow_nonpositive: bool = False,
                   k: int | None = None) -> torch.Tensor:
    """bool mask [nbr, nbc] with at most K = floor(budget * nbr * nbc) blocks, or the given ``k``
    (from ``allocate_counts``); exactly K when at least K blocks are eligible."""
    flat = scores.reshape(-1)
    if k is None:
        k = budget_count(budget, flat.numel())
    elif not 0 <= k <= flat.numel():
        raise ValueError(f"k={k} must lie in [0, {flat.numel()}] (the layer's blocks)")
    order = _ranked(flat)
    order = order[_eligible(flat, allow_nonpositive)[order]][:k]
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=scores.device)
    mask[order] = True
    return mask.view(scores.shape)


def topk_global(
    scores: dict[str, torch.Tensor],
    budget: float,
    weights_per_block: dict[str, float] | None = None,
    allow_nonpositive: bool = False,
) -> dict[str, torch.Tensor]:
    """Rank blocks across all layers; the budget is a fraction of ALL blocks of the model.

    weights_per_block=None: every block costs 1 and exactly K = floor(budget * total_blocks)
    blocks are kept (if that many are eligible). With per-layer costs c_l (use the block element
    count bh*bw when layers have different block shapes; storage is bh*bw*4 bits per kept block,
    edge blocks included), the capacity is floor(budget * sum_l c_l * n_l) and blocks are ranked
    by score per unit cost (score / c_l), then kept greedily in rank order while the cumulative
    cost fits (stopping at the first block that does not fit).
    """
    budget = _check_budget(budget)
    names = list(scores)
    if not names:
        return {}
    flats = [scores[n].reshape(-1).double().cpu() for n in names]
    sizes = [f.numel() for f in flats]
    if weights_per_block is None:
        costs = [1.0] * len(names)
    else:
        missing = [n for n in names if n not in weights_per_block]
        if missing:
            raise ValueError(f"weights_per_block lacks layers {missing}")
        costs = [float(weights_per_block[n]) for n in names]
        if any(c <= 0 for c in costs):
            raise ValueError("weights_per_block must be positive")
    flat = torch.cat(flats)
    cost = torch.cat([torch.full((s,), c, dtype=torch.float64) for s, c in zip(sizes, costs)])
    order = _ranked(flat / cost)
    order = order[_eligible(flat, allow_nonpositive)[order]]
    if weights_per_block is None:
        order = order[: budget_count(budget, flat.numel())]
    else:
        capacity = math.floor(budget * float(cost.sum()) + 1e-9)
        csum = torch.cumsum(cost[order], 0)
        order = order[csum <= capacity + 1e-9]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[order] = True
    out, start = {}, 0
    for n, s in zip(names, sizes):
        out[n] = chosen[start:start + s].view(scores[n].shape).to(scores[n].device)
        start += s
    return out
