"""Work-balanced split-K ranges for the tiled zipper kernel (native/NOTES.md v22).

With split-K every CTA of an n column takes an equal run of k-tiles, but a k-tile that carries residual units
costs the zipper kernel about one more tile body at small M (measured at o, M = 16: 2 residual tiles in a CTA of 8
added 1.8 us to 9.3; at M = 64 ~0.2 of a tile). One wave of CTAs ends with its slowest CTA, so a 3 % residual
costs like 25 %: the CTAs that hold a residual block set the time. Here each n column's k range is cut into the
same number of splits so that the most expensive split is as cheap as possible, residual tiles weighted by
``cost`` (in base tiles); the kernel reads the cuts as ``Params::split_bounds`` [n CTAs, splitk + 1].
"""

from __future__ import annotations

import itertools

import torch

# extra cost of a k-tile with residual units, in base k-tiles, by the tile's rows (BM). Measured (H100, LLaMA-3-8B
# shapes at 3 % / 10 %, costs 0.25 / 0.5 / 1 / 2 swept; bench/results/ab_v22_balanced_splitk_20261207T0928Z.log):
# BM 16 (M = 9..16) and 32 (M = 17..32) time best at 1, BM 64 (M = 33..64) at 0.5; BM 128 is not measured (its
# routes rarely split K) and keeps the prior's smaller weight
RESIDUAL_TILE_COST = {16: 1.0, 32: 1.0, 64: 0.5, 128: 0.25}
# the warp-specialized bt 128 wgmma zipper (MOSAIC_WS_BIG_BALANCED builds, NOTES.md v28): read from session 20's
# residual-free vs 3 % zipper at o, M = 256 (~1.7 us over ~4 residual k-tiles per CTA at ~0.42 us per k-tile); a
# prior until the A/B sweeps it
WS_BIG_RESIDUAL_TILE_COST = 1.0


def uniform_bounds(kt: int, kt_per_split: int) -> list[int]:
    """The kernel's default cuts: split s takes [s * kt_per_split, min(kt, (s + 1) * kt_per_split))."""
    return [min(kt, s * kt_per_split) for s in range(-(-kt // kt_per_split) + 1)]


def max_part(work: list[float], bounds: list[int]) -> float:
    return max(sum(work[a:b]) for a, b in itertools.pairwise(bounds))


def min_max_partition(work: list[float], parts: int) -> list[int]:
    """Cuts [0 = b0 < b1 < ... < b_parts = len(work)] of `work` into `parts` non-empty contiguous runs whose
    largest sum is the smallest possible (to 1e-9 of the largest element)."""
    n = len(work)
    if not 1 <= parts <= n:
        raise ValueError(f"cannot cut {n} k-tiles into {parts} non-empty splits")

    def greedy(limit: float) -> list[int]:
        cuts, acc = [0], 0.0
        for i, w in enumerate(work):
            if acc + w > limit and i > cuts[-1]:
                cuts.append(i)
                acc = 0.0
            acc += w
        return cuts + [n]

    lo, hi = max(max(work), sum(work) / parts), sum(work)
    for _ in range(60):  # bisection on the largest run's sum
        mid = (lo + hi) / 2
        if len(greedy(mid)) - 1 <= parts:
            hi = mid
        else:
            lo = mid
    cuts = greedy(hi)
    while len(cuts) - 1 < parts:  # fewer runs than splits: halve the longest run (never raises the maximum)
        i = max(range(len(cuts) - 1), key=lambda j: cuts[j + 1] - cuts[j])
        cuts.insert(i + 1, (cuts[i] + cuts[i + 1]) // 2)
    return cuts


def residual_tiles(res_bits: torch.Tensor, kt: int) -> torch.Tensor:
    """[NT, kt] bool on the CPU: whether (64-wide unit, k-tile) has a residual unit, from the zipper kernel's bit
    words (PackedW4.res_bits [NT, ceil(kt / 32)] int32: bit kt % 32 of word kt // 32), which every launch path
    has (the custom ops pass no LUT)."""
    words = res_bits.detach().to("cpu", torch.int64) & 0xFFFFFFFF
    t = torch.arange(kt)
    return ((words[:, t // 32] >> (t % 32)) & 1).bool()


def balanced_split_bounds(has_res: torch.Tensor, nw: int, kt_per_split: int, cost: float) -> torch.Tensor | None:
    """[n CTAs, splitk + 1] int32 cuts (CPU) for a tile config `nw` 64-wide units wide, or None where no column
    gets a cheaper most-expensive split than the uniform cuts (the kernel then keeps them).

    has_res: [NT, KT] bool, whether a (64-wide unit, k-tile) has a residual unit (residual_tiles). A k-tile of a
    CTA weighs 1 + cost if any of its nw units has a residual (its warps wait for the slowest at the tile's
    barrier)."""
    if cost < 0:
        raise ValueError(f"residual tile cost must be >= 0, got {cost}")
    nt, kt = has_res.shape
    if nt % nw:
        raise ValueError(f"{nt} units do not split into CTAs of {nw}")
    has = has_res.to("cpu", torch.bool).view(nt // nw, nw, kt).any(dim=1).tolist()
    uni = uniform_bounds(kt, kt_per_split)
    splitk = len(uni) - 1
    rows, better = [], False
    for row in has:
        b = uni
        if splitk > 1 and any(row):
            work = [1.0 + cost if r else 1.0 for r in row]
            cand = min_max_partition(work, splitk)
            if max_part(work, cand) < max_part(work, uni) - 1e-9:
                b, better = cand, True
        rows.append(b)
    return torch.tensor(rows, dtype=torch.int32) if better else None
