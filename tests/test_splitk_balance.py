"""mosaic_exp/kernels/splitk_balance.py (CPU): the balanced split-K cuts are optimal, well formed, and never
worse than the kernel's uniform cuts."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from mosaic_exp.kernels import splitk_balance as sb


def _brute_force(work: list[float], parts: int) -> float:
    n = len(work)
    best = float("inf")
    for inner in itertools.combinations(range(1, n), parts - 1):
        best = min(best, sb.max_part(work, [0, *inner, n]))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_min_max_partition_is_optimal_and_well_formed(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 12)
    parts = rng.randint(1, n)
    cost = rng.choice([0.0, 0.2, 1.0, 2.5])
    work = [1.0 + cost * (rng.random() < 0.3) for _ in range(n)]
    cuts = sb.min_max_partition(work, parts)
    assert cuts[0] == 0 and cuts[-1] == n and len(cuts) == parts + 1
    assert all(a < b for a, b in itertools.pairwise(cuts)), cuts  # every split non-empty
    assert sb.max_part(work, cuts) == pytest.approx(_brute_force(work, parts), abs=1e-9)


def test_min_max_partition_rejects_more_splits_than_tiles():
    with pytest.raises(ValueError, match="3 k-tiles into 4"):
        sb.min_max_partition([1.0, 1.0, 1.0], 4)


def test_uniform_bounds_are_the_kernels_default():
    assert sb.uniform_bounds(64, 8) == [0, 8, 16, 24, 32, 40, 48, 56, 64]
    assert sb.uniform_bounds(37, 5) == [0, 5, 10, 15, 20, 25, 30, 35, 37]  # the last split is short


def test_balanced_bounds_move_tiles_away_from_the_residual_split():
    """o at M = 16 in miniature: 64 k-tiles in 8 splits, one 128 x 128 residual block (2 k-tiles of both units of a
    128-wide CTA) in split 2 of CTA column 1: uniform = 8 + 2 tile-times there, balanced = 9."""
    has = torch.zeros((4, 64), dtype=torch.bool)
    has[2:4, 18:20] = True
    b = sb.balanced_split_bounds(has, nw=2, kt_per_split=8, cost=1.0)
    assert b is not None and b.shape == (2, 9) and b.dtype == torch.int32
    assert b[0].tolist() == sb.uniform_bounds(64, 8)  # no residual: the kernel's cuts
    row = b[1].tolist()
    work = [2.0 if 18 <= t < 20 else 1.0 for t in range(64)]
    assert row[0] == 0 and row[-1] == 64 and all(x < y for x, y in itertools.pairwise(row))
    assert sb.max_part(work, row) == 9.0 < sb.max_part(work, sb.uniform_bounds(64, 8)) == 10.0


def test_balanced_bounds_none_where_nothing_improves():
    none = torch.zeros((4, 64), dtype=torch.bool)
    assert sb.balanced_split_bounds(none, nw=2, kt_per_split=8, cost=1.0) is None
    every = torch.ones((4, 64), dtype=torch.bool)  # a residual on every tile: uniform is already balanced
    assert sb.balanced_split_bounds(every, nw=2, kt_per_split=8, cost=1.0) is None
    one = none.clone()
    one[0, 3] = True
    assert sb.balanced_split_bounds(one, nw=1, kt_per_split=64, cost=1.0) is None  # one split: nothing to move


def test_balanced_bounds_reject_bad_input():
    has = torch.zeros((3, 8), dtype=torch.bool)
    with pytest.raises(ValueError, match="3 units do not split into CTAs of 2"):
        sb.balanced_split_bounds(has, nw=2, kt_per_split=4, cost=1.0)
    with pytest.raises(ValueError, match="cost must be >= 0"):
        sb.balanced_split_bounds(has, nw=1, kt_per_split=4, cost=-1.0)


@pytest.mark.parametrize("seed", range(6))
def test_balanced_bounds_never_worse_than_uniform(seed):
    g = torch.Generator().manual_seed(seed)
    nt, kt, ktps = 8, 37, 5
    res = torch.rand(nt, kt, generator=g) < 0.1
    b = sb.balanced_split_bounds(res, nw=2, kt_per_split=ktps, cost=1.0)
    uni = sb.uniform_bounds(kt, ktps)
    has = res.view(nt // 2, 2, kt).any(dim=1)
    rows = b.tolist() if b is not None else [uni] * (nt // 2)
    for row, h in zip(rows, has.tolist()):
        work = [2.0 if x else 1.0 for x in h]
        assert len(row) == len(uni) and row[0] == 0 and row[-1] == kt
        assert sb.max_part(work, row) <= sb.max_part(work, uni) + 1e-9


@pytest.mark.parametrize("k", [64 * 40 + 24, 64 * 33, 64 * 70])
def test_residual_tiles_from_bit_words_match_the_lut(k):
    """The bit words the kernels (and the custom ops) carry give the same residual map as the packing's LUT,
    across word boundaries (33 and 70 k-tiles) and a ragged K."""
    from mosaic_exp.kernels.packing import pack_quantized
    from mosaic_exp.kernels.testing import random_quantized

    p = pack_quantized(random_quantized(448, k, 64, False, 0.2, (64, 64)), torch.float16)
    kt = p.k_pad // 64
    assert torch.equal(sb.residual_tiles(p.res_bits, kt), p.res_lut >= 0)


@pytest.mark.parametrize("built", [True, False])
def test_balance_request_names_the_missing_switch(monkeypatch, built):
    """Unset $MOSAIC_ZIPPER_BALANCED_SPLITK = balanced where the module has the switch (the default build); no
    silent fallback: an explicit request on a build with -DMOSAIC_BALANCED_SPLITK=0 is an error that says how to
    build it; a bad value is named (both checked before any launch). The build's answer is stubbed: the rule,
    not the module, is under test (test_kernels.py launches both kinds on the GPU)."""
    from mosaic_exp.kernels import ops

    monkeypatch.setattr(ops, "balanced_splitk_built", lambda: built)
    monkeypatch.setenv(ops.BALANCED_SPLITK_ENV, "yes")
    with pytest.raises(ValueError, match="MOSAIC_ZIPPER_BALANCED_SPLITK must be 0 or 1 \\(or unset\\), got 'yes'"):
        ops._balance_on(None, "(m=16, n=4096, k=4096)")
    assert ops._balance_on(False, "") is False  # an explicit argument does not read the variable
    monkeypatch.setenv(ops.BALANCED_SPLITK_ENV, "0")
    assert ops._balance_on(None, "") is False and ops._balance_on(False, "") is False
    monkeypatch.delenv(ops.BALANCED_SPLITK_ENV)
    assert ops._balance_on(None, "") is built
    assert ops._balance_on(False, "") is False
    if built:
        assert ops._balance_on(True, "") is True
        monkeypatch.setenv(ops.BALANCED_SPLITK_ENV, "1")
        assert ops._balance_on(None, "") is True
    else:
        with pytest.raises(RuntimeError, match=r"\(m=16, n=4096, k=4096\).*-DMOSAIC_BALANCED_SPLITK=0"):
            ops._balance_on(True, "(m=16, n=4096, k=4096)")
        monkeypatch.setenv(ops.BALANCED_SPLITK_ENV, "1")
        with pytest.raises(RuntimeError, match="-DMOSAIC_BALANCED_SPLITK=0"):
            ops._balance_on(None, "")


def test_ops_balanced_bounds_from_the_bit_words_cached_per_plan():
    """ops._balanced_bounds, shared by the tiled kernel and (MOSAIC_WS_BIG_BALANCED builds, NOTES.md v28) the split
    large wgmma tiles, 2 units per CTA: the cuts come from the kernel's residual bit words, as the kernel indexes
    them ([n tile][splitk + 1]), and are cached per weight and plan."""
    from types import SimpleNamespace

    from mosaic_exp.kernels import ops

    kt = 64
    has = torch.zeros((4, kt), dtype=torch.bool)
    has[2:4, 18:20] = True
    has[0, 33] = True  # a bit past the first word, in a column too short to move anything
    t = torch.arange(kt)
    words = torch.zeros((4, kt // 32), dtype=torch.int64)
    words.index_add_(1, t // 32, has.long() << (t % 32))
    p = SimpleNamespace(res_bits=words.to(torch.int32), k_pad=kt * 64)
    assert torch.equal(sb.residual_tiles(p.res_bits, kt), has)
    b = ops._balanced_bounds(p, 2, 8, 8, 1.0, "test plan", "(test)")
    assert b is not None and torch.equal(b, sb.balanced_split_bounds(has, nw=2, kt_per_split=8, cost=1.0))
    assert ops._balanced_bounds(p, 2, 8, 8, 1.0, "test plan", "(test)") is b  # cached
    wide = ops._balanced_bounds(p, 4, 8, 8, 1.0, "test plan", "(test)")  # 4 units per CTA: its own cache entry
    assert wide is not None and wide.shape == (1, 9)
    assert torch.equal(wide, sb.balanced_split_bounds(has, nw=4, kt_per_split=8, cost=1.0))
