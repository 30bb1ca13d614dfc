"""Launch wrappers and ``torch.library`` custom ops of the ZipperEngine kernels.

  mosaic::dense_gemm     base only (one kernel)
  mosaic::zipper_gemm    base + residual in ONE kernel (residual added to the B fragment)
  mosaic::separate_gemm  dense kernel, then a residual-only kernel accumulating into Y

Each op has a fake (meta) implementation, so they trace under torch.compile. Importing this
module registers the ops but does not load the native module (that happens at first launch).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import torch

from mosaic_exp.kernels import routes, splitk_balance
from mosaic_exp.kernels.native import load_native
from mosaic_exp.kernels.packing import TILE, PackedW4

MODE_DENSE, MODE_ZIPPER, MODE_RESIDUAL = 0, 1, 2
DTYPE_CODE = {torch.float16: 0, torch.bfloat16: 1}
MAX_WORKSPACE_BYTES = 256 << 20
MAX_SPLITK = 8
# tile configs (native/zipper_kernels.cu): the residual-only kernel has the BN=64 ones only
RESIDUAL_CFG = {3: 2, 4: 0, 5: 1, 6: 2, 7: 0, 8: 2, 9: 1}
MIN_TILES_PER_SPLIT = 4
# zipper prologue scheme (native/zipper_kernels.cu): "first" waits for the residual bit words
# before the first copies (under PDL that wait overlaps the previous kernel)
ZIPPER_PROLOGUE = {"first": 1}  # v8's "late" scheme measured equal and was removed in v9
DEFAULT_ZIPPER_PROLOGUE = "first"
DEFAULT_SMALL_M_CFG = 4  # cfg7 measured 3.6% slower for dense (native/NOTES.md v8e)
# split-K fix-up (native/NOTES.md v9): "cluster" sums the splits' partials through DSMEM inside a
# thread-block cluster of the splitk CTAs of an output tile; "global" writes fp32 partials to a
# workspace and the last CTA (atomic counter) sums them. $MOSAIC_SPLITK_FIXUP overrides.
# "auto" (measured, native/NOTES.md v9): cluster for M >= CLUSTER_MIN_M when the splits are short
# (<= CLUSTER_MAX_KTPS k-tiles: the fix-up is a large part of the time), global otherwise (GPC-wide
# cluster placement costs balance on long splits; at M=1 the global fix-up is cheap).
SPLITK_FIXUP = {"global": 0, "cluster": 1}
DEFAULT_SPLITK_FIXUP = "auto"
CLUSTER_MIN_M = 2
CLUSTER_MAX_KTPS = 16
# programmatic dependent launch ($MOSAIC_PDL=0 turns it off): each kernel issues its weight
# prologue (codes, scales, residual bit words and units) before `griddepcontrol.wait`, so it
# overlaps the previous kernel's tail; X, Y and the split-K workspace are touched only after the
# wait. The weights must therefore not be written by the kernel launched just before in the same
# stream (packing then an immediate launch is fine when any other kernel, e.g. the poisoning
# fill in the tests, runs in between; QuantLinear's weights are written once).
# "early" triggers the next launch right after the wait, "late" after the mainloop. "auto"
# (measured, native/NOTES.md v9): early for split-K grids (splitk >= 4: short CTAs, the next
# grid's prologue hides behind this one's fix-up), late for the rest (early lets the next grid's
# CTAs take free slots unevenly: gate_up +7%), off above PDL_MAX_M (at M=64 early PDL cost
# down +5-30%, and it did not pay on the other shapes).
PDL_MODES = {"off": 0, "early": 1, "late": 3}
DEFAULT_PDL = "auto"
PDL_MAX_M = 16
TPI2_CFGS = (7,)  # configs with two k-tiles per mainloop iteration
# zipper residual ring: the residual units of tile t+lead are issued while tile t is consumed;
# with the full lead (STAGES-1) the ring holds the densest window of STAGES k-tiles, which at 10%
# (and at 3% on some maps) is 6 slots: 3 CTAs/SM for cfg4, gate_up falls to splitk 1. A shorter
# lead (the largest whose densest window of lead+1 tiles fits RING_SLOTS_CAP) is used when it
# changes the plan or the splits are long (> LEAD_MAX_KTPS_FULL k-tiles); on short splits the
# later residual copies cost more than the ring (measured, native/NOTES.md v9).
RING_SLOTS_CAP = 4
LEAD_MAX_KTPS_FULL = 16
# Residency-aware lead (NOTES.md v20): take the shortest residual lead (the smallest ring) when the chosen lead leaves
# some of a cluster split-K grid's clusters non-resident and the shortest lead's ring lets all be resident; with PDL
# the next launch's clusters count too (two grids overlap: a second partial wave of clusters costs a whole pass).
# Measured at o, M = 16 on cfg 11: 12.6 -> 11.1 us. $MOSAIC_ZIPPER_RESIDENT_LEAD=0 turns it off.
RESIDENT_LEAD_ENV = "MOSAIC_ZIPPER_RESIDENT_LEAD"


# NOTES.md v22 (on by default since measured): the zipper's split-K ranges balanced by work per n column
# (splitk_balance.py: residual tiles weighted). $MOSAIC_ZIPPER_BALANCED_SPLITK: unset = on where the module was
# built with the switch (the default build), 1 = on (an error on a build without it), 0 = the uniform ranges;
# launch(balance=...) overrides it. The kernel name says ',balanced' where a table was passed.
BALANCED_SPLITK_ENV = "MOSAIC_ZIPPER_BALANCED_SPLITK"


def _balance_on(balance: bool | None, where: str) -> bool:
    v = os.environ.get(BALANCED_SPLITK_ENV)
    if balance is None and v not in (None, "0", "1"):
        raise ValueError(f"${BALANCED_SPLITK_ENV} must be 0 or 1 (or unset), got {v!r} {where}")
    if balance is None and v is None:
        return balanced_splitk_built()
    on = bool(balance) if balance is not None else v == "1"
    if on and not balanced_splitk_built():  # an explicit request: no silent fallback to the uniform cuts
        raise RuntimeError(f"balanced split-K requested {where}, but the native module was built with "
                           "-DMOSAIC_BALANCED_SPLITK=0 (python scripts/build_native.py without that define)")
    return on


_SPLIT_BOUNDS: dict = {}  # (residual map's address and shape, device, plan, cost) -> device table or None
_SPLIT_BOUNDS_MAX = 4096


def _split_bounds(p: PackedW4, pl: Plan, where: str) -> torch.Tensor | None:
    """The tiled kernel's balanced split-K cuts of `p` for plan `pl` (_balanced_bounds)."""
    cost = splitk_balance.RESIDUAL_TILE_COST.get(pl.bm, min(splitk_balance.RESIDUAL_TILE_COST.values()))
    return _balanced_bounds(p, pl.bn // 64, pl.splitk, pl.kt_per_split, cost, f"splitk={pl.splitk}, cfg {pl.cfg}", where)


def _balanced_bounds(p: PackedW4, nw: int, splitk: int, kt_per_split: int, cost: float, label: str,
                     where: str) -> torch.Tensor | None:
    """The balanced split-K cuts of `p` for CTAs `nw` units wide on p's device, or None where they would not lower
    any column's most expensive split. Cached by the residual bit words' address (the custom ops build a PackedW4 per
    call around the module's tensors); a reused address can only give valid but unbalanced cuts, never wrong sums.
    The cuts are computed on the CPU from the bit words, so the first launch of a (weight, plan) must not be inside
    a CUDA graph capture (a device-to-host copy there would invalidate the capture): warm up before capturing."""
    rb = p.res_bits
    key = (rb.data_ptr(), tuple(rb.shape), str(rb.device), nw, splitk, kt_per_split, cost)
    if key not in _SPLIT_BOUNDS:
        if rb.is_cuda and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"balanced split-K cuts for this weight and plan ({label}) "
                               f"are not cached and cannot be computed under CUDA graph capture {where}: run the "
                               f"layer once at this M before capturing, or set ${BALANCED_SPLITK_ENV}=0")
        if len(_SPLIT_BOUNDS) >= _SPLIT_BOUNDS_MAX:
            _SPLIT_BOUNDS.clear()
        b = splitk_balance.balanced_split_bounds(splitk_balance.residual_tiles(rb, p.k_pad // TILE), nw,
                                                 kt_per_split, cost)
        _SPLIT_BOUNDS[key] = None if b is None else b.to(rb.device)
    return _SPLIT_BOUNDS[key]


def _resident_lead_on() -> bool:
    v = os.environ.get(RESIDENT_LEAD_ENV, "1")
    if v not in ("0", "1"):
        raise ValueError(f"${RESIDENT_LEAD_ENV} must be 0 or 1, got {v!r}")
    return v == "1"


def resident_lead(need: int, rslots: int, short_rslots: int, resident) -> bool:
    """Whether to switch to the shortest lead: `need` clusters (of the grid, or of two grids under PDL), the ring
    slots of the chosen lead and of the shortest one, resident(rslots) = clusters the occupancy API lets be resident
    with that ring."""
    return short_rslots < rslots and resident(rslots) < need <= resident(short_rslots)

# small-M path (native/gemv_kernels.cu): weights as the MMA's A operand, one warp per (n16 slice,
# K range), kparts warps of a CTA per slice, splitk CTAs (a cluster) per slice group; used for
# M <= GEMV_MAX_M ($MOSAIC_GEMV_MAX_M) unless a tile config or split-K is forced, or with path="gemv".
# By default only at M <= 8 (one 8-row MMA block) and only where one of GEMV_ONE_WAVE_PLANS[mode] (the
# first that fits) runs in one wave of resident CTAs, the warps of a slice on disjoint K ranges, no
# cluster: there it beats the tiled kernel (NOTES.md v13, v14); at M >= 9 (16-row blocks, twice the X
# rows staged per CTA) the tiled kernel is faster. One or two slices per CTA first (o, qkv, down); the
# zipper's second choice is 8-warp CTAs (3 per SM: qkv in one wave). Wide layers (gate_up: 1792 slices)
# need 4 or 8 slices per CTA to fit one wave: (16, 2, 1) runs LLaMA-3 gate_up at M=1 in 27.8 us dense /
# 31.4 us zipper against the tiled kernel's 30.6 / 40.2. Last, K split over a cluster of 2 CTAs halves
# the X rows a CTA stages: LLaMA-3 down at M=4 (16, 8, 2) runs 19.9 us zipper against the tiled 27.3
# (dense: 18.3 both); from M=7 nothing fits one wave there and the tiled kernel runs (NOTES.md v14).
# At M = 9..32 (two or four 8-row blocks per CTA, NOTES.md v15) a plan runs only where the device's route
# table (routes.py, written by scripts/tune_gemv_routes.py from GEMV_TUNE_PLANS) measured it faster than the
# tiled kernel for that shape and mode; shapes the table lacks keep the tiled kernel.
# $MOSAIC_GEMV_PLAN="warps,kparts,splitk" forces a plan.
GEMV_MAX_M = 32
# the candidate plans the tuner times at M = 9..32 (a plan whose CTA does not fit is skipped)
GEMV_TUNE_PLANS = ((16, 16, 1), (16, 8, 1), (16, 8, 2), (16, 4, 1), (16, 4, 2), (16, 4, 4), (16, 2, 1), (16, 2, 2),
                   (16, 2, 4), (16, 1, 2), (16, 1, 4), (16, 1, 8), (16, 8, 4), (16, 8, 8), (16, 4, 8), (8, 8, 1),
                   (8, 8, 2), (8, 4, 2), (8, 2, 2), (8, 2, 4), (8, 8, 8), (8, 1, 8), (4, 1, 8), (4, 4, 4))
# tiled and wgmma candidates the tuner also times per row bucket (routes.row_block: 4 = M 17..32, 8 = M 33..64):
# (cfg, splitk) with the 4-warp tiles and two m-tiles of a 32-row tile at M = 64; (bt, wgs, splitk) wgmma tiles.
# Left out after the H100 measurement of NOTES.md v17 (bench/results/kernels_20261207T004*): the 8-warp tiles
# cfg 8 / 9 (30-60 % slower than cfg 6 / 5 on every shape and bucket; still selectable by cfg=) and the
# warp-specialized bt 32 wgmma tile at M = 17..32 (1.3-1.8x slower than the tiled kernel). wgmma split 8 is new
# (session 12: o at M = 64 fell 34.8 -> 26.4 -> 22.9 us over splits 1 / 2 / 4)
# cfg 10 / 11 / 12 (NOTES.md v20 / v21: the cfg 2 / 4 / 5 tiles with their zipper kernel at 5 / 5 / 4 CTAs per SM)
# are zipper candidates only: their dense kernels are cfg 2 / 4 / 5 with fewer stages.
TILED_TUNE_PLANS = {2: ((11, 8), (11, 4)),
                    4: ((5, 4), (5, 8), (5, 16), (6, 8), (12, 2), (12, 4), (12, 8), (12, 16), (11, 4), (11, 8)),
                    8: ((6, 2), (6, 4), (6, 8), (6, 16), (5, 4), (5, 8), (2, 8), (2, 16), (10, 4), (10, 6), (10, 8),
                        (12, 4), (12, 8))}
ZIPPER_ONLY_TUNE_CFGS = (10, 11, 12)
# (128, 3, s): the large warp-specialized tile with its global split-K (NOTES.md v26), half its tokens past M = 64
WGMMA_TUNE_PLANS = {8: ((64, 2, 1), (64, 2, 2), (64, 2, 4), (64, 2, 8), (64, 3, 1), (64, 3, 2), (64, 3, 4),
                        (128, 3, 1), (128, 3, 2), (128, 3, 4), (128, 3, 8))}
GEMV_ONE_WAVE_PLANS = {MODE_DENSE: ((16, 16, 1), (16, 8, 1), (8, 8, 1), (16, 4, 1), (16, 2, 1), (16, 8, 2)),
                       MODE_ZIPPER: ((16, 16, 1), (8, 8, 1), (16, 8, 1), (16, 4, 1), (16, 2, 1), (16, 8, 2))}
GEMV_WARPS = (4, 8, 16)
GEMV_KPARTS = (1, 2, 4, 8, 16)
GEMV_SPLITK = (1, 2, 4, 8)
# large-M path (native/wgmma_kernels.cu, sm_90a): warpgroup MMAs with the weights dequantized into the
# A operand's registers. Tiles (bt tokens, wgs): wgs 3 = the warp-specialized kernel (TMA producer
# warpgroup + 2 consumer warpgroups, 128 n x bt 128 or 256, the default), wgs 2 / 4 = the classic
# kernel (64 wgs n x bt 64 or 128, optional cluster split-K). Used on sm_90 devices where
# wgmma_routes() says so ($MOSAIC_WGMMA_MIN_M; 0 = never) unless a tile config or split-K forces the
# tiled kernel, or with path="wgmma".
# Routing (measured, native/NOTES.md v11/v12): M >= WGMMA_MIN_M where wgmma_tile() finds a tile that
# keeps the SMs busy; wgmma_tile() itself keeps M < 64 on the tiled kernel (its split-K wins there)
# unless the small warp-specialized tiles are switched on.
WGMMA_MIN_M = 1
WGMMA_MIN_FILL = 0.7
WGMMA_WS128_FILL, WGMMA_WS128_FILL_SHORT_K, WGMMA_SHORT_K = 0.45, 0.2, 8192
# K splits of the large warp-specialized tiles (NOTES.md v26): one CTA per SM, and each CTA's k-tile takes about
# the same time whether 32 or 128 CTAs run (o at M = 128 / 256 / 512: 32 / 64 / 128 CTAs of bt 128, 29.8-30.1 us
# each, bench_kernels_20261207T104712Z), so a grid of fewer CTAs than SMs is split along K until it fills one wave
# ($MOSAIC_WS_BIG_SPLITK: 'auto', or a fixed count; 1 = never split), keeping >= WS_BIG_MIN_KTPS k-tiles per split
WS_BIG_MAX_SPLITK = 8
WS_BIG_MIN_KTPS = 8
WGMMA_TILES = ((64, 2), (128, 2), (64, 4), (128, 4),  # (bt, wgs); wgs 3: warp-specialized
               (8, 3), (16, 3), (32, 3), (64, 3), (128, 3), (256, 3))
# the warp-specialized small tiles (bt 8..64: a one-warp producer, 2 CTAs per SM, cluster split-K) for
# M <= WS_SMALL_MAX_M ($MOSAIC_WS_SMALL_MAX_M; 0 = off): K is split until the grid has WS_SMALL_FILL x
# the resident CTA slots' worth of CTAs, keeping >= WS_SMALL_MIN_KTPS k-tiles per split. Off by default:
# measured 1.2-2x slower than the tiled kernel at M = 1, 16 and 64, except gate_up at M = 64
# (native/NOTES.md v12: the consumers are issue-latency bound with 2 warps per scheduler)
WS_SMALL_TILES = (8, 16, 32, 64)
WS_SMALL_MAX_M = 0
WS_SMALL_FILL = 0.6
WS_SMALL_MIN_KTPS = 8
SM_BYTES_PER_NS = 3.0e12 / 132 / 1e9  # H100 copy bandwidth per SM (ENVIRONMENT.md), for the planner
GEMV_FILL_NS, GEMV_TILE_NS, GEMV_SUM_NS = 1500.0, 100.0, 150.0  # pipeline fill, per-tile issue, kparts sum

_ws_cache: dict = {}
_cfg_cache: dict = {}
_sm_cache: dict = {}
_name_cache: dict = {}
_clusters_cache: dict = {}
LAST_LAUNCH: dict = {}


@dataclass
class Plan:
    cfg: int
    bm: int
    bn: int
    splitk: int
    kt_per_split: int
    mtiles: int
    nctas: int


def _config(cfg: int, mode: int) -> dict:
    key = (cfg, mode)
    if key not in _cfg_cache:
        nat = load_native()
        c = dict(nat.config(cfg, mode))
        c["regs"] = nat.kernel_regs(cfg, mode)
        _cfg_cache[key] = c
    return _cfg_cache[key]


def ctas_per_sm(c: dict, mode: int, rslots: int = 1) -> int:
    """Resident CTAs per SM (H100: 228 KB smem, 64K registers, 2048 threads) for config c."""
    smem = c["smem_bytes"] + c["static_smem"] + 1024
    if mode == MODE_ZIPPER:
        smem += (c["bn"] // TILE) * min(rslots, c["stages"]) * c["ring_unit_bytes"]
    lim = min(8, (228 * 1024) // smem, 2048 // c["threads"])
    if c.get("regs", -1) > 0:
        per_warp = -(-c["regs"] * 32 // 256) * 256
        lim = min(lim, 65536 // (per_warp * (c["threads"] // 32)))
    return max(1, lim)


def small_m_cfg() -> int:
    """Tile config for M <= 16: 4, or 7 (cfg4 with two k-tiles per mainloop iteration);
    $MOSAIC_SMALL_M_CFG overrides the default."""
    v = int(os.environ.get("MOSAIC_SMALL_M_CFG", DEFAULT_SMALL_M_CFG))
    if v not in (4, 7):
        raise ValueError(f"MOSAIC_SMALL_M_CFG must be 4 or 7, got {v}")
    return v


def _sm_count(device: torch.device) -> int:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _sm_cache:
        _sm_cache[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _sm_cache[idx]


def _device_name(device: torch.device) -> str:
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _name_cache:
        _name_cache[idx] = torch.cuda.get_device_name(idx)
    return _name_cache[idx]


def max_splitk() -> int:
    """Split-K cap of the planner ($MOSAIC_MAX_SPLITK, 1..16; cluster fix-up allows 16)."""
    v = int(os.environ.get("MOSAIC_MAX_SPLITK", MAX_SPLITK))
    if not 1 <= v <= 16:
        raise ValueError(f"MOSAIC_MAX_SPLITK must be in [1, 16], got {v}")
    return v


def max_active_clusters(cfg: int, mode: int, splitk: int, rslots: int) -> int:
    key = (cfg, mode, splitk, rslots)
    if key not in _clusters_cache:
        _clusters_cache[key] = int(load_native().max_active_clusters(cfg, mode, splitk, rslots))
    return _clusters_cache[key]


def default_cfg(m: int) -> int:
    return small_m_cfg() if m <= 16 else 5 if m <= 32 else 6 if m <= 64 else 3


def _window(p: PackedW4, w: int) -> int:
    """Most residual units of one n-tile row in w consecutive k-tiles (w >= 1)."""
    wins = tuple(p.res_windows) or (p.res_window_max,) * 8
    return int(wins[min(w, len(wins)) - 1]) if w <= len(wins) else int(p.res_window_max)


def _has_short_lead(cfg: int) -> bool:
    """The zipper kernel of this config has residual leads shorter than STAGES - 1 (> 4 stages, one tile per step)."""
    return cfg not in TPI2_CFGS and _config(cfg, MODE_ZIPPER)["stages"] > 4


def zipper_ring(p: PackedW4, cfg: int, zprologue: str, rlead: int | None = None) -> tuple[int, int]:
    """(rlead, rslots) of the zipper kernel: rlead 0 = the full lead (STAGES - 1, residual units with
    their base tile), rslots = densest window of lead + 1 tiles (full lead: STAGES tiles)."""
    c = _config(cfg, MODE_ZIPPER)
    stages = c["stages"]
    pro = stages - (2 if cfg in TPI2_CFGS else 1)
    if not _has_short_lead(cfg):  # the kernel has the shorter lead only for > 4 stages, one tile per step
        if rlead is not None and rlead != pro:
            raise ValueError(f"config {cfg} has only the full residual lead ({pro}), got {rlead}")
        return 0, max(1, min(_window(p, stages), stages))
    if rlead is None:
        rlead = 1
        for r in range(pro, 0, -1):
            if _window(p, r + 1) <= RING_SLOTS_CAP:
                rlead = r
                break
    if not 1 <= rlead <= pro:
        raise ValueError(f"rlead must be in [1, {pro}] for config {cfg}, got {rlead}")
    rs = max(1, min(_window(p, rlead + 1), stages))
    return (0 if rlead == pro else rlead), rs


def plan(m: int, n_pad: int, k_pad: int, mode: int, sm_count: int, cfg: int | None = None,
         splitk: int | None = None, rslots: int = 1, cluster: bool = False) -> Plan:
    """Tile config by M; split-K so that about one full wave of CTAs is resident (with the
    cluster fix-up: one wave of splitk-CTA clusters, as the occupancy API counts them)."""
    if cfg is None:
        cfg = default_cfg(m)
    if mode == MODE_RESIDUAL and cfg >= 3:
        cfg = RESIDUAL_CFG[cfg]
    c = _config(cfg, mode)
    bm, bn = c["bm"], c["bn"]
    mtiles, nctas = math.ceil(m / bm), n_pad // bn
    kt = k_pad // TILE
    if mode == MODE_RESIDUAL:
        return Plan(cfg, bm, bn, 1, kt, mtiles, nctas)
    if splitk is None:
        base = mtiles * nctas
        target = sm_count * ctas_per_sm(c, mode, rslots)
        # the most splits (<= MAX_SPLITK, >= MIN_TILES_PER_SPLIT k-tiles each) that still fit in
        # one wave of resident CTAs (a partial second wave costs a whole pass of latency)
        splitk = 1 if base >= target else max(1, min(target // base, max_splitk(),
                                                     max(1, kt // MIN_TILES_PER_SPLIT)))
        if cluster:
            while splitk > 1 and base > max_active_clusters(cfg, mode, splitk, min(rslots, c["stages"])):
                splitk -= 1
        else:
            while splitk > 1 and splitk * mtiles * bm * n_pad * 4 > MAX_WORKSPACE_BYTES:
                splitk -= 1
    splitk = max(1, min(int(splitk), kt))
    ktps = math.ceil(kt / splitk)
    splitk = math.ceil(kt / ktps)
    return Plan(cfg, bm, bn, splitk, ktps, mtiles, nctas)


@dataclass
class GemvPlan:
    warps: int
    kparts: int
    splitk: int
    ktpw: int
    mb: int
    ctas: int
    ctas_per_sm: int
    est_ns: float


def gemv_max_m() -> int:
    v = int(os.environ.get("MOSAIC_GEMV_MAX_M", GEMV_MAX_M))
    if v < 0:
        raise ValueError(f"MOSAIC_GEMV_MAX_M must be >= 0, got {v}")
    return v


def gemv_mb(m: int) -> int:
    """8-row blocks of M per small-M CTA: 1, 2 or 4 (M <= 8, <= 16, larger: grid z-slices of 32 rows)."""
    return 1 if m <= 8 else 2 if m <= 16 else 4


@functools.cache
def _gemv_regs(mode: int, mb: int, warps: int) -> int:
    """Registers per thread of a compiled small-M kernel: a driver query (cudaFuncGetAttributes), asked once
    per kernel instead of once per candidate plan on every launch."""
    return load_native().gemv_regs(mode, mb, warps)


def _gemv_ctas_per_sm(regs: int, smem: int, warps: int) -> int:
    """Resident small-M CTAs per SM (H100: 64K registers, 228 KB shared memory, 64 warps)."""
    by_regs = 65536 // (-(-max(regs, 1) * 32 // 256) * 256 * warps)
    return max(0, min(by_regs, (228 * 1024) // (smem + 1024), 64 // warps, 32))


def _forced_gemv_plan() -> tuple[int, int, int] | None:
    forced = os.environ.get("MOSAIC_GEMV_PLAN")
    if not forced:
        return None
    try:
        w, kp, sk = (int(v) for v in forced.split(","))
    except ValueError:
        raise ValueError(f"MOSAIC_GEMV_PLAN must be 'warps,kparts,splitk', got {forced!r}") from None
    return w, kp, sk


def gemv_plan(m: int, n_pad: int, k_pad: int, gs_tiles: int, zeros: bool, mode: int, sm_count: int,
              force: tuple[int, int, int] | None = None, regs: int | None = None) -> GemvPlan:
    """(warps per CTA, warps per slice = kparts, CTAs per slice group = splitk) of the small-M kernel.

    Without ``force``: the least estimated time, max(bytes of the busiest SM / its bandwidth share,
    waves x (pipeline fill + k-tiles per warp x issue time)) + the cross-warp and cross-CTA sums, over
    all (warps, kparts, splitk). This model does not rank the measured plans well (NOTES.md v10, v13);
    the default routing uses ``gemv_default_plan`` instead."""
    force = force or _forced_gemv_plan()
    mb = gemv_mb(m)
    nat = load_native()
    ns, kt = n_pad // 16, k_pad // TILE
    mz = -(-m // (8 * mb))
    if force is not None:
        cands = [force]
    else:
        cands = [(w, kp, sk) for w in GEMV_WARPS for kp in GEMV_KPARTS for sk in GEMV_SPLITK if w % kp == 0]
    best = None
    for w, kp, sk in cands:
        if w % kp or not 1 <= sk <= 16:
            raise ValueError(f"bad small-M plan warps={w} kparts={kp} splitk={sk}")
        spc = w // kp
        ktpw = -(-kt // (sk * kp))
        if force is None and (sk - 1) * kp * ktpw >= kt:
            continue  # an empty split
        smem = nat.gemv_smem_bytes(kt, gs_tiles, kp * ktpw, spc, int(zeros), w, mode, mb, m)
        cps = _gemv_ctas_per_sm(regs if regs is not None else _gemv_regs(mode, mb, w), smem, w)
        if cps < 1 or smem > nat.GEMV_SMEM_MAX:
            continue
        ctas = -(-ns // spc) * sk * mz
        bw = -(-ctas // sm_count) * spc * kp * ktpw * 512 / SM_BYTES_PER_NS
        lat = -(-ctas // (sm_count * cps)) * (GEMV_FILL_NS + ktpw * GEMV_TILE_NS)
        est = max(bw, lat) + (GEMV_SUM_NS if kp > 1 else 0.0) + (GEMV_SUM_NS if sk > 1 else 0.0)
        cand = GemvPlan(w, kp, sk, ktpw, mb, ctas, cps, est)
        if best is None or (est, ctas * w) < (best.est_ns, best.ctas * best.warps):
            best = cand
    if best is None:
        raise ValueError(f"no small-M plan fits (m={m}, n_pad={n_pad}, k_pad={k_pad}, force={force})")
    return best


def gemv_default_plan(m: int, p: PackedW4, mode: int, sm_count: int, device_name: str | None = None) -> GemvPlan | None:
    """The small-M plan the default routing takes, or None (then the tiled kernel runs).

    M <= 8: the first of GEMV_ONE_WAVE_PLANS[mode] whose CTAs fill exactly one wave (at least one per SM, all
    resident at once). M = 9..32 (two or four 8-row blocks per CTA): the plan that the route table measured
    faster than the tiled kernel on this GPU model for this shape (``routes.lookup``), else None."""
    forced = _forced_gemv_plan()
    if forced is not None:
        return gemv_plan(m, p.n_pad, p.k_pad, p.gs_tiles, p.zeros is not None, mode, sm_count, forced)
    mb = gemv_mb(m)
    if mb > 1:
        if device_name is None:
            return None
        route = routes.lookup(device_name, p.n_pad, p.k_pad, "zipper" if mode == MODE_ZIPPER else "dense", mb)
        if route is None or route == "tiled" or isinstance(route[0], str):  # no entry, or a tiled / wgmma plan
            return None
        try:  # a table entry whose plan does not fit this packing (e.g. more scale groups) is skipped
            return gemv_plan(m, p.n_pad, p.k_pad, p.gs_tiles, p.zeros is not None, mode, sm_count, route)
        except ValueError:
            return None
    for plan in GEMV_ONE_WAVE_PLANS[mode]:
        try:
            gp = gemv_plan(m, p.n_pad, p.k_pad, p.gs_tiles, p.zeros is not None, mode, sm_count, plan)
        except ValueError:  # its X rows and scales do not fit shared memory
            continue
        # one full wave: every SM busy (fewer CTAs leave SMs' bandwidth idle: LLaMA-3 down at M=4 on 128
        # CTAs ran 22.3 us against the tiled kernel's 18.5, NOTES.md v14), every CTA resident
        if 1 <= gp.ctas_per_sm and sm_count <= gp.ctas <= sm_count * gp.ctas_per_sm:
            return gp
    return None


def mid_m_route(m: int, p: PackedW4, mode: int, device_name: str | None) -> tuple[str, tuple[int, ...]] | None:
    """The route table's tiled or wgmma plan for this shape, mode and M bucket (M = 9..64): ('tiled', (cfg,
    splitk)), ('tiled', None) (the planner's tile and split), or ('wgmma', (bt, wgs, splitk)); None where the
    table has no entry or a gemv plan (``gemv_default_plan`` takes those)."""
    mb = routes.row_block(m)
    if mb is None or device_name is None:
        return None
    r = routes.lookup(device_name, p.n_pad, p.k_pad, "zipper" if mode == MODE_ZIPPER else "dense", mb)
    if r == "tiled":  # measured: the tiled kernel with the planner's tile (also where a wgmma rule would apply)
        return "tiled", None
    return r if isinstance(r, tuple) and isinstance(r[0], str) else None


def wgmma_min_m() -> int:
    v = int(os.environ.get("MOSAIC_WGMMA_MIN_M", WGMMA_MIN_M))
    if v < 0:
        raise ValueError(f"MOSAIC_WGMMA_MIN_M must be >= 0 (0 = off), got {v}")
    return v


def _wgmma_ctas(m: int, n_pad: int, bt: int, wgs: int) -> int:
    units = 2 if wgs == 3 else wgs  # wgs 3: 2 consumer warpgroups (one 64-wide unit each) + a producer
    return math.ceil(n_pad / (64 * units)) * math.ceil(m / bt)


def ws_big_splitk(ctas: int, kt: int, sm_count: int) -> int:
    """K splits of a large warp-specialized grid of ``ctas`` tiles over ``kt`` k-tiles: as many as keep every
    split's CTA in one wave (one CTA per SM), at most WS_BIG_MAX_SPLITK, >= WS_BIG_MIN_KTPS k-tiles each, no empty
    split ($MOSAIC_WS_BIG_SPLITK = 'auto' or a fixed count)."""
    v = os.environ.get("MOSAIC_WS_BIG_SPLITK", "auto")
    if v == "auto":
        s = max(1, min(WS_BIG_MAX_SPLITK, sm_count // max(ctas, 1), kt // WS_BIG_MIN_KTPS))
    else:
        try:
            s = int(v)
        except ValueError:
            s = 0
        if not 1 <= s <= WS_BIG_MAX_SPLITK:
            raise ValueError(f"MOSAIC_WS_BIG_SPLITK must be 'auto' or in [1, {WS_BIG_MAX_SPLITK}], got {v!r}")
        s = min(s, kt)
    return math.ceil(kt / math.ceil(kt / s))  # what the binding launches: no empty split


def ws_small_max_m() -> int:
    v = int(os.environ.get("MOSAIC_WS_SMALL_MAX_M", WS_SMALL_MAX_M))
    if not 0 <= v <= 64:
        raise ValueError(f"MOSAIC_WS_SMALL_MAX_M must be in [0, 64] (0 = off), got {v}")
    return v


def ws_small_tile(m: int, n_pad: int, k_pad: int, sm_count: int) -> tuple[int, int, int]:
    """(bt, 3, splitk) of the warp-specialized small tile for M <= 64: the narrowest token tile holding
    M, and the smallest K split (1, 2, 4, 8; >= WS_SMALL_MIN_KTPS k-tiles per split) whose grid reaches
    WS_SMALL_FILL x the SMs' resident CTA slots (2 per SM)."""
    bt = next(b for b in WS_SMALL_TILES if b >= min(m, 64))
    slots = sm_count * 2
    base = math.ceil(n_pad / 128) * math.ceil(m / bt)
    kt = k_pad // TILE
    splitk = 1
    for s in (2, 4, 8):
        if base * splitk >= WS_SMALL_FILL * slots or kt / s < WS_SMALL_MIN_KTPS:
            break
        splitk = s
    ktps = math.ceil(kt / splitk)
    return bt, 3, math.ceil(kt / ktps)


def wgmma_tile(m: int, n_pad: int, k_pad: int, sm_count: int,
               force: tuple[int, ...] | None = None) -> tuple[int, int, int] | None:
    """(token tile bt, warpgroups per CTA wgs, splitk) of the wgmma kernel, or None where the default
    routing keeps the tiled kernel. Measured (native/NOTES.md v11, kernels_20261123T0403Z_probe_wgmma_route,
    kernels_20261123T0426Z_probe_wgmma_ws): per-CTA work wants the largest tile that keeps the SMs busy,
      - the warp-specialized 128 n x 256 tokens (wgs 3: a TMA producer and 2 consumer warpgroups, one CTA
        per SM) for M > 128 when its grid has >= WGMMA_MIN_FILL x SMs CTAs (1.2-1.4x the other tiles);
      - else for M > 64 the warp-specialized 128 n x 128 tokens, its K split while the grid has fewer CTAs
        than SMs (``ws_big_splitk``, NOTES.md v26), when the split grid has >= WGMMA_WS128_FILL x SMs CTAs,
        or WGMMA_WS128_FILL_SHORT_K x SMs with K <= WGMMA_SHORT_K
        (kernels_20261123T0436Z_probe_wgmma_ws128: best at M=128-512 where bt 256 has too few CTAs);
      - else 128 n x 128 tokens (wgs 2, two CTAs per SM) when its grid has >= WGMMA_MIN_FILL x SMs CTAs;
      - else (or for M <= 64) 128 n x 64 tokens (wgs 2) under the same condition;
      - else None (the tiled kernel with split-K: a few long CTAs are latency bound here).
    256 n x 128 tokens (wgs 4) is never better than bt 256 with the same CTA count, and the classic tiles'
    K is not split by default (cluster split-K measured slower on every shape but one); ``force`` = (bt, wgs)
    or (bt, wgs, splitk) runs any tile and split."""
    kt = k_pad // TILE
    if force is not None:
        force = tuple(int(v) for v in force)
        if force[:2] not in WGMMA_TILES or len(force) not in (2, 3):
            raise ValueError(f"wgmma tile must be (bt, wgs[, splitk]) with (bt, wgs) in {WGMMA_TILES}, got {force}")
        bt, wgs = force[:2]
        splitk = force[2] if len(force) == 3 else 1
        if not 1 <= splitk <= min(8, kt):
            raise ValueError(f"wgmma splitk must be in [1, min(8, k-tiles={kt})], got {splitk}")
        ktps = math.ceil(kt / splitk)
        return bt, wgs, math.ceil(kt / ktps)  # what the binding launches: no empty split
    if m <= ws_small_max_m():
        return ws_small_tile(m, n_pad, k_pad, sm_count)
    if m < 64:  # the classic tiles lose to the tiled kernel's split-K below 64 (NOTES.md v11)
        return None
    # the warp-specialized 128 n x 256 tokens tile (one CTA per SM) from half-full token tiles on
    if m > 128 and _wgmma_ctas(m, n_pad, 256, 3) >= WGMMA_MIN_FILL * sm_count:
        return 256, 3, 1
    if m > 64:  # the warp-specialized 128 x 128 tile, K split up to one wave; it holds up with fewer CTAs unless K is long
        ctas = _wgmma_ctas(m, n_pad, 128, 3)
        splitk = ws_big_splitk(ctas, kt, sm_count)
        ctas *= splitk
        if ctas >= WGMMA_WS128_FILL * sm_count or (k_pad <= WGMMA_SHORT_K and ctas >= WGMMA_WS128_FILL_SHORT_K * sm_count):
            return 128, 3, splitk
    for bt in (128, 64) if m > 64 else (64,):
        if _wgmma_ctas(m, n_pad, bt, 2) >= WGMMA_MIN_FILL * sm_count:
            return bt, 2, 1
    return None


def wgmma_routes(m: int, n_pad: int, k_pad: int, sm_count: int) -> bool:
    """Whether the default routing sends M to the wgmma kernel (given an sm_90 device)."""
    wmin = wgmma_min_m()
    return 0 < wmin <= m and wgmma_tile(m, n_pad, k_pad, sm_count) is not None


def _workspace(device: torch.device, floats: int, counters: int) -> tuple[torch.Tensor, torch.Tensor]:
    key = (device.type, device.index)
    ws, cnt = _ws_cache.get(key, (None, None))
    if ws is None or ws.numel() < floats:
        ws = torch.empty(max(floats, 1 << 20), dtype=torch.float32, device=device)
    if cnt is None or cnt.numel() < counters:
        cnt = torch.zeros(max(counters, 1 << 16), dtype=torch.int32, device=device)
    _ws_cache[key] = (ws, cnt)
    return ws, cnt


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def check_inputs(x: torch.Tensor, n: int, k: int, dtype: torch.dtype, device: torch.device | None = None) -> int:
    """Validate an activation against a packed weight; returns M. Errors name m, n, k."""
    m = x.numel() // x.shape[-1] if x.dim() >= 1 and x.shape[-1] else 0
    where = f"(m={m}, n={n}, k={k})"
    if x.dim() < 1 or x.shape[-1] != k:
        raise ValueError(f"zipper gemm {where}: x has shape {tuple(x.shape)}, its last dim must be k={k}")
    if x.dtype not in DTYPE_CODE:
        raise TypeError(f"zipper gemm {where}: x dtype {x.dtype} not supported (float16 or bfloat16)")
    if x.dtype != dtype:
        raise TypeError(f"zipper gemm {where}: x dtype {x.dtype} != packed weight dtype {dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"zipper gemm {where}: x on {x.device}, weights on {device}")
    if x.device.type != "cuda":
        raise ValueError(f"zipper gemm {where}: x must be a CUDA tensor, got device {x.device}")
    return m


def _env_fixup(fixup: str | None, where: str) -> str:
    f = fixup or os.environ.get("MOSAIC_SPLITK_FIXUP") or DEFAULT_SPLITK_FIXUP
    if f not in SPLITK_FIXUP and f != "auto":
        raise ValueError(f"split-K fix-up must be one of {sorted(SPLITK_FIXUP)}, got {f!r} {where}")
    return f


def _env_pdl(pdl: bool | str | None, where: str, m: int, splitk: int) -> str:
    """PDL mode: pdl True -> 'auto', False -> off, or a mode name; None -> $MOSAIC_PDL
    (0/off, 1/auto, early, late) or DEFAULT_PDL."""
    v = pdl if pdl is not None else os.environ.get("MOSAIC_PDL", DEFAULT_PDL)
    if v is True or v in ("1", "on"):
        v = "auto"
    elif v is False or v in ("0", ""):
        v = "off"
    if v == "auto":
        v = "off" if m > PDL_MAX_M else "early" if splitk >= 4 else "late"
    if v not in PDL_MODES:
        raise ValueError(f"pdl must be one of {sorted(PDL_MODES)} (or a bool), got {v!r} {where}")
    return v


def launch(x: torch.Tensor, p: PackedW4, variant: str, out: torch.Tensor | None = None,
           cfg: int | None = None, splitk: int | None = None, zprologue: str | None = None,
           fixup: str | None = None, pdl: bool | str | None = None, rlead: int | None = None,
           path: str | None = None, gemv: tuple[int, int, int] | None = None,
           wgmma: tuple[int, ...] | None = None, balance: bool | None = None) -> torch.Tensor:
    """Run ``variant`` in {'dense', 'zipper', 'separate'} on x [..., K] -> [..., N].

    ``out`` (optional, [M, N] contiguous, x's dtype) lets tests poison the output first.
    ``zprologue`` ('first' / 'late', default $MOSAIC_ZIPPER_PROLOGUE or
    DEFAULT_ZIPPER_PROLOGUE) picks the zipper kernel's prologue scheme, ``fixup`` ('cluster' /
    'global' / 'auto', default $MOSAIC_SPLITK_FIXUP or DEFAULT_SPLITK_FIXUP) the split-K fix-up,
    ``pdl`` (True/False or 'off'/'early'/'late', default $MOSAIC_PDL or DEFAULT_PDL) programmatic
    dependent launch, ``rlead`` (tests) the zipper's residual lead (default: chosen by zipper_ring).
    ``path`` picks the kernel family: 'tiled' (zipper_kernels.cu), 'gemv' (small-M kernel,
    gemv_kernels.cu, M <= 32 per launch slice), 'wgmma' (large-M kernel, wgmma_kernels.cu, sm_90a), or
    None: gemv for M <= gemv_max_m() where ``gemv_default_plan`` has a plan, at M = 9..64 the tiled or wgmma
    plan of the device's route table (``mid_m_route``) where it has one, wgmma where ``wgmma_routes`` says
    so on an sm_90 device, tiled otherwise; ``cfg`` or ``splitk`` force a tiled launch. ``gemv`` = (warps, kparts, splitk) forces the
    small-M plan, ``wgmma`` = (bt, wgs[, splitk]) the wgmma kernel's CTA tile (bt tokens x 64 wgs n) and K split.
    ``balance`` (default $MOSAIC_ZIPPER_BALANCED_SPLITK, else on where built): the tiled zipper's split-K ranges
    balanced by work per n column (NOTES.md v22; the kernel name then says 'balanced'), and in builds with
    MOSAIC_WS_BIG_BALANCED=1 those of the split large wgmma tiles (NOTES.md v28)."""
    n, k = p.out_features, p.in_features
    m = check_inputs(x, n, k, p.dtype, p.qweight.device)
    if variant not in ("dense", "zipper", "separate"):
        raise ValueError(f"unknown native variant {variant!r} (m={m}, n={n}, k={k})")
    lead = x.shape[:-1]
    if out is not None and (out.shape != (m, n) or out.dtype != x.dtype or out.device != x.device
                            or not out.is_contiguous()):
        raise ValueError(f"zipper gemm (m={m}, n={n}, k={k}): out must be contiguous [{m}, {n}] {x.dtype} "
                         f"on {x.device}, got {tuple(out.shape)} {out.dtype} {out.device}")
    y = out if out is not None else torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y.view(*lead, n)
    x2 = x.reshape(m, k)
    kk = k
    if k % 8:
        kk = (k + 7) // 8 * 8
        x2 = torch.nn.functional.pad(x2, (0, kk - k))
    x2 = x2.contiguous()
    nat = load_native()
    dt = DTYPE_CODE[x.dtype]
    stream = torch.cuda.current_stream(x.device).cuda_stream
    sms = _sm_count(x.device)
    mode = {"dense": MODE_DENSE, "zipper": MODE_ZIPPER, "separate": MODE_DENSE}[variant]
    if mode == MODE_ZIPPER and not p.has_residual:
        mode = MODE_DENSE  # no residual units: the zipper kernel IS the dense kernel
    where = f"(m={m}, n={n}, k={k})"
    if path not in (None, "tiled", "gemv", "wgmma"):
        raise ValueError(f"path must be 'tiled', 'gemv' or 'wgmma', got {path!r} {where}")
    if path is None:
        free = cfg is None and splitk is None
        if (free and m <= gemv_max_m() and gemv is None
                and (gp := gemv_default_plan(m, p, mode, sms, _device_name(x.device))) is not None):
            path, gemv = "gemv", (gp.warps, gp.kparts, gp.splitk)
        elif free and m <= gemv_max_m() and gemv is not None:
            path = "gemv"
        elif (free and gemv is None and wgmma is None
              and (route := mid_m_route(m, p, mode, _device_name(x.device))) is not None
              and (route[0] == "tiled" or torch.cuda.get_device_capability(x.device)[0] == 9)):
            # a measured tiled or wgmma plan of the device's route table (routes.py, NOTES.md v17)
            path = route[0]
            if path == "tiled" and route[1] is not None:
                cfg, splitk = route[1]
            elif path == "wgmma":
                wgmma = route[1]
        elif free and wgmma_routes(m, p.n_pad, p.k_pad, sms) and torch.cuda.get_device_capability(x.device)[0] == 9:
            path = "wgmma"
        else:
            path = "tiled"
    if path in ("gemv", "wgmma"):  # one kernel of that family (+ the residual kernel for separate)
        if path == "gemv":
            kernels = [_launch_gemv(x2, p, y, mode, m, kk, dt, stream, sms, pdl, where, gemv)]
            res_pdl = _env_pdl(pdl, where, m, 1)
        else:
            name, res_pdl = _launch_wgmma(x2, p, y, mode, m, kk, dt, stream, sms, wgmma, pdl, where, balance)
            kernels = [name]
        if variant == "separate" and p.has_residual:
            kernels.append(_launch_residual(x2, p, y, m, kk, dt, stream, sms, res_pdl))
        LAST_LAUNCH.update(variant=variant, kernels=kernels, m=m, n=n, k=k)
        return y.view(*lead, n)
    fx = _env_fixup(fixup, where)
    zp = zprologue or os.environ.get("MOSAIC_ZIPPER_PROLOGUE") or DEFAULT_ZIPPER_PROLOGUE
    if zp not in ZIPPER_PROLOGUE:
        raise ValueError(f"zipper prologue must be one of {sorted(ZIPPER_PROLOGUE)}, got {zp!r} (m={m}, n={n}, k={k})")
    cfg_sel = default_cfg(m) if cfg is None else cfg
    if cfg_sel in TPI2_CFGS:
        zp = "first"  # two k-tiles per iteration: the kernel only has the 'first' prologue
    rl, rslots = zipper_ring(p, cfg_sel, zp, rlead) if mode == MODE_ZIPPER else (0, 1)

    def mkplan(rs: int) -> tuple[Plan, str]:
        pl0 = plan(m, p.n_pad, p.k_pad, mode, sms, cfg_sel, splitk, rs, cluster=False)
        f = fx
        if f == "auto":
            f = ("cluster" if m >= CLUSTER_MIN_M and pl0.splitk > 1 and pl0.kt_per_split <= CLUSTER_MAX_KTPS
                 else "global")
        if f == "cluster" and splitk is None:
            return plan(m, p.n_pad, p.k_pad, mode, sms, cfg_sel, splitk, rs, cluster=True), f
        if (f == "cluster" and fx == "auto" and pl0.splitk > 1
                and max_active_clusters(cfg_sel, mode, pl0.splitk, min(rs, _config(cfg_sel, mode)["stages"])) == 0):
            f = "global"  # a forced split whose cluster cannot be resident (e.g. a denser residual ring)
        return pl0, f

    pl, fx_sel = mkplan(rslots)
    if mode == MODE_ZIPPER and rl and rlead is None:
        # shorter lead only where it pays: it changes the plan, or the splits are long
        rl_full, rs_full = zipper_ring(p, cfg_sel, zp, _config(cfg_sel, mode)["stages"] - 1)
        pl_full, fx_full = mkplan(rs_full)
        if pl_full.splitk == pl.splitk and pl.kt_per_split <= LEAD_MAX_KTPS_FULL:
            rl, rslots, pl, fx_sel = rl_full, rs_full, pl_full, fx_full
    pdl_mode = _env_pdl(pdl, where, m, pl.splitk)
    if (mode == MODE_ZIPPER and rlead is None and fx_sel == "cluster" and pl.splitk > 1
            and _resident_lead_on() and _has_short_lead(cfg_sel)):
        rl1, rs1 = zipper_ring(p, cfg_sel, zp, 1)
        grids = 1 if pdl_mode == "off" else 2
        if resident_lead(grids * pl.mtiles * pl.nctas, rslots, rs1,
                         lambda rs: max_active_clusters(cfg_sel, mode, pl.splitk, rs)):
            rl, rslots = rl1, rs1
    fx = fx_sel
    if pl.splitk == 1:
        fx = "global"  # no fix-up at all
    if fx == "cluster" and pl.splitk > 16:
        raise ValueError(f"cluster split-K fix-up needs splitk <= 16, got {pl.splitk} {where}")
    ws, cnt = _workspace(x.device, pl.splitk * pl.mtiles * pl.bm * p.n_pad if pl.splitk > 1 and fx == "global" else 0,
                         pl.mtiles * pl.nctas)
    bounds = (_split_bounds(p, pl, where) if mode == MODE_ZIPPER and pl.splitk > 1 and _balance_on(balance, where)
              else None)
    nat.gemm(x2.data_ptr(), p.qweight.data_ptr(), p.scales.data_ptr(), _ptr(p.zeros),
             _ptr(p.res_qweight) if p.has_residual else 0, _ptr(p.res_scales) if p.has_residual else 0,
             p.res_bits.data_ptr() if mode == MODE_ZIPPER else 0, p.res_csr_ptr.data_ptr(), 0, 0,
             y.data_ptr(), ws.data_ptr(), cnt.data_ptr(),
             p.res_base.data_ptr() if mode == MODE_ZIPPER else 0, rslots,
             m, n, kk, p.n_pad, p.k_pad, p.gs_tiles, pl.splitk, pl.kt_per_split, dt, mode, pl.cfg, stream,
             ZIPPER_PROLOGUE[zp] if mode == MODE_ZIPPER else 0, SPLITK_FIXUP[fx], PDL_MODES[pdl_mode], rl,
             0 if bounds is None else bounds.data_ptr())
    fx_name = fx + ("-compact" if fx == "cluster" and _compact_fixup()[0] else "")  # NOTES.md v18 variant builds
    tags = ((f",{fx_name}" if pl.splitk > 1 else "") + (",balanced" if bounds is not None else "")
            + (f",pdl-{pdl_mode}" if pdl_mode != "off" else ""))
    kernels = [f"{'zipper' if mode == MODE_ZIPPER else 'dense'}[cfg{pl.cfg},splitk{pl.splitk}{tags}"
               + (f",rslots{rslots},{zp}" + (f",lead{rl}]" if rl else "]") if mode == MODE_ZIPPER else "]")]
    if variant == "separate" and p.has_residual:
        kernels.append(_launch_residual(x2, p, y, m, kk, dt, stream, sms, pdl_mode))
    LAST_LAUNCH.update(variant=variant, kernels=kernels, m=m, n=n, k=k)
    return y.view(*lead, n)


def _launch_residual(x2, p: PackedW4, y, m: int, kk: int, dt: int, stream: int, sms: int, pdl_mode: str) -> str:
    """The second kernel of `separate`: the residual units' product added into y."""
    pr = plan(m, p.n_pad, p.k_pad, MODE_RESIDUAL, sms, None)
    load_native().gemm(x2.data_ptr(), 0, 0, 0, p.res_qweight.data_ptr(), p.res_scales.data_ptr(), 0,
                       p.res_csr_ptr.data_ptr(), p.res_csr_kt.data_ptr(), p.res_csr_id.data_ptr(),
                       y.data_ptr(), 0, 0, 0, 1, m, p.out_features, kk, p.n_pad, p.k_pad, p.gs_tiles, 1,
                       p.k_pad // TILE, dt, MODE_RESIDUAL, pr.cfg, stream, 0, 0, PDL_MODES[pdl_mode], 0)
    return f"residual[cfg{pr.cfg}" + (f",pdl-{pdl_mode}]" if pdl_mode != "off" else "]")


@functools.cache
def _compact_fixup() -> tuple[int, int]:
    """(tiled, wgmma): whether the linked kernel objects were built with the compact cluster fix-up
    (NOTES.md v18; the default since session 15; a module without the attribute predates the switch)."""
    return tuple(getattr(load_native(), "COMPACT_CLUSTER_FIXUP", (0, 0)))


@functools.cache
def _ws_big_switches() -> dict[str, int]:
    """The large-tile wgmma kernels' compile-time switches as the linked objects were built (NOTES.md v25, v28;
    0 where a module predates one): read once, by the launcher on every launch and by native_build_flags."""
    native = load_native()
    return {key: int(getattr(native, attr, 0)) for key, attr in (
        ("ws_big_split_producer", "WS_BIG_SPLIT_PRODUCER"), ("ws_big_zprobe", "WS_BIG_ZPROBE"),
        ("ws_big_split_fixup", "WS_BIG_SPLIT_FIXUP"), ("ws_big_balanced", "WS_BIG_BALANCED"))}


@functools.cache
def balanced_splitk_built() -> bool:
    """Whether the linked tiled kernels read balanced split-K cuts (MOSAIC_BALANCED_SPLITK, 1 by default; NOTES.md v22)."""
    return bool(getattr(load_native(), "BALANCED_SPLITK", 0))


def native_build_flags() -> dict:
    """Compile-time variants of the linked kernel objects, for result files (a benchmark says which build ran)."""
    tiled, wgmma = _compact_fixup()
    flags = {"compact_cluster_fixup": {"tiled": int(tiled), "wgmma": int(wgmma)}}
    if balanced_splitk_built():
        flags["balanced_splitk"] = 1
    flags.update({key: v for key, v in _ws_big_switches().items() if v})  # the large tiles' switches, where on
    flags.update({key: v for key, v in _gemv_switches().items() if v})  # the small-M kernels' (NOTES.md v29)
    return flags


@functools.cache
def _gemv_switches() -> dict[str, int]:
    """The small-M kernels' compile-time switches as the linked objects were built (NOTES.md v29; 0 where a module
    predates one): gemv_zero_fold 1 = the bf16 one-block dense kernels fold the base's zero point per group, 2 =
    the zipper kernels too; gemv_zipper_wptr = the zipper's loop-carried weight / scale pointers; gemv_xstep_const
    = lanes of X rows past M read row 0 with the common step."""
    native = load_native()
    return {key: int(getattr(native, attr, 0)) for key, attr in (
        ("gemv_zero_fold", "GEMV_ZERO_FOLD"), ("gemv_zipper_wptr", "GEMV_ZIPPER_WPTR"),
        ("gemv_xstep_const", "GEMV_XSTEP_CONST"))}


@functools.cache
def _ws_stage_ktiles(bt: int) -> int:
    return load_native().wgmma_ws_stage_ktiles(bt)


def _launch_wgmma(x2, p: PackedW4, y, mode: int, m: int, kk: int, dt: int, stream: int, sms: int,
                  force: tuple[int, ...] | None, pdl, where: str, balance: bool | None = None) -> tuple[str, str]:
    """The wgmma kernel (dense or zipper); returns the kernel's name and its PDL mode. PDL only for the
    small warp-specialized tiles (bt <= 64), under the same policy as the tiled kernel."""
    bt, wgs, splitk = wgmma_tile(m, p.n_pad, p.k_pad, sms, force) or (64, 2, 1)  # path="wgmma" always launches
    pdl_mode = _env_pdl(pdl, where, m, splitk) if wgs == 3 and bt <= 64 else "off"
    zip_ = mode == MODE_ZIPPER
    # small warp-specialized tiles: residual units a pipeline stage (kb k-tiles of 2 units) can hold, bounded
    # by the densest window of kb k-tiles of one unit row (packing); the other kernels ignore it
    rslots = 0
    if zip_ and wgs == 3 and bt <= 64:
        kb = _ws_stage_ktiles(bt)
        wins = tuple(p.res_windows) or (p.res_window_max,) * 8
        rslots = max(1, min(2 * kb, 2 * int(wins[kb - 1])))
    ws = cnt = bounds = None
    if wgs == 3 and bt >= 128 and splitk > 1:  # the large tiles' splits meet in global memory: an fp32 partial
        ctas = _wgmma_ctas(m, p.n_pad, bt, wgs)  # tile (128 n x bt) per split and a counter per tile
        ws, cnt = _workspace(x2.device, ctas * splitk * 128 * bt, ctas)
        # v28 builds: the zipper's k ranges balanced by work per 128-wide n tile, as the tiled kernel's (v22)
        if zip_ and _ws_big_switches()["ws_big_balanced"] and _balance_on(balance, where):
            kt = p.k_pad // TILE
            bounds = _balanced_bounds(p, 2, splitk, math.ceil(kt / splitk), splitk_balance.WS_BIG_RESIDUAL_TILE_COST,
                                      f"wgmma bt {bt}, splitk={splitk}", where)
    load_native().wgmma(x2.data_ptr(), p.qweight.data_ptr(), p.scales.data_ptr(), _ptr(p.zeros),
                        _ptr(p.res_qweight) if zip_ else 0, _ptr(p.res_scales) if zip_ else 0,
                        p.res_bits.data_ptr() if zip_ else 0, p.res_base.data_ptr() if zip_ else 0,
                        y.data_ptr(), m, p.out_features, kk, p.n_pad, p.k_pad, p.gs_tiles, bt, dt, mode, stream,
                        PDL_MODES[pdl_mode], wgs, splitk, rslots, _ptr(ws), _ptr(cnt), _ptr(bounds))
    # the large tiles' fix-up as compiled (NOTES.md v28): global partials, a cluster, or none (a probe build)
    fix = {0: ",global", 1: ",cluster", 9: ",nofixup-probe"}.get(_ws_big_switches()["ws_big_split_fixup"], ",?")
    tag = ((",compact" if splitk > 1 and wgs != 3 and _compact_fixup()[1] else "")
           + (fix if ws is not None else "") + (",balanced" if bounds is not None else "") + (f",pdl-{pdl_mode}" if pdl_mode != "off" else ""))
    return f"wgmma-{'zipper' if zip_ else 'dense'}[bt{bt},wgs{wgs},splitk{splitk}{tag}]", pdl_mode


def _launch_gemv(x2, p: PackedW4, y, mode: int, m: int, kk: int, dt: int, stream: int, sms: int,
                 pdl, where: str, force: tuple[int, int, int] | None) -> str:
    """The small-M kernel (dense or zipper) on blocks of 8, 16 or 32 rows; returns the kernel's name."""
    nat = load_native()
    gp = gemv_plan(m, p.n_pad, p.k_pad, p.gs_tiles, p.zeros is not None, mode, sms, force)
    pdl_mode = _env_pdl(pdl, where, m, gp.kparts * gp.splitk)
    nat.gemv(x2.data_ptr(), p.qweight.data_ptr(), p.scales.data_ptr(), _ptr(p.zeros),
             _ptr(p.res_qweight) if mode == MODE_ZIPPER else 0, _ptr(p.res_scales) if mode == MODE_ZIPPER else 0,
             p.res_bits.data_ptr() if mode == MODE_ZIPPER else 0, p.res_base.data_ptr() if mode == MODE_ZIPPER else 0,
             y.data_ptr(), m, p.out_features, kk, p.n_pad, p.k_pad, p.gs_tiles, gp.kparts, gp.ktpw,
             gp.warps, gp.mb, dt, mode, stream, PDL_MODES[pdl_mode], gp.splitk)
    name = "gemv-zipper" if mode == MODE_ZIPPER else "gemv-dense"
    sw = _gemv_switches()
    fold = sw["gemv_zero_fold"]
    zfold = ",zfold" if gp.mb == 1 and p.dtype == torch.bfloat16 and (fold == 2 or fold and mode == MODE_DENSE) else ""
    wptr = ",wptr" if mode == MODE_ZIPPER and sw["gemv_zipper_wptr"] else ""
    xc = ",xc" if sw["gemv_xstep_const"] else ""
    return (f"{name}[mb{gp.mb},warps{gp.warps},kparts{gp.kparts},splitk{gp.splitk}" + f",ring{nat.gemv_ring_depth(mode, gp.warps)}"
            + zfold + wptr + xc + (f",pdl-{pdl_mode}]" if pdl_mode != "off" else "]"))


# ---------------------------------------------------------------------------- custom ops
def _packed_from_args(qweight, scales, zeros, res_qweight, res_scales, res_lut, csr_ptr, csr_kt, csr_id,
                      n, k, gs_tiles, res_bits=None, res_base=None, res_windows=(1,)) -> PackedW4:
    return PackedW4(out_features=n, in_features=k, n_pad=scales.shape[1], k_pad=qweight.shape[1] * TILE,
                    group_size=gs_tiles * TILE if gs_tiles else k, gs_tiles=gs_tiles, dtype=scales.dtype,
                    qweight=qweight, scales=scales, zeros=zeros, block_shape=(TILE, TILE),
                    res_qweight=res_qweight, res_scales=res_scales, res_lut=res_lut, res_csr_ptr=csr_ptr,
                    res_csr_kt=csr_kt, res_csr_id=csr_id, res_bits=res_bits, res_base=res_base,
                    res_window_max=int(res_windows[-1]), res_windows=tuple(int(v) for v in res_windows))


def _empty_res(scales: torch.Tensor, qweight: torch.Tensor):
    return _empty_res_cached(qweight.device, scales.dtype, qweight.shape[0], qweight.shape[1])


@functools.cache
def _empty_res_cached(dev: torch.device, dtype: torch.dtype, nt: int, kt: int):
    # the unused residual arguments of a dense / separate call: read-only, so made once per device and shape (they
    # were allocated per call: four fill kernels and six allocations in every eager forward)
    return (torch.zeros(0, 2048, dtype=torch.uint8, device=dev), torch.zeros(0, TILE, dtype=dtype, device=dev),
            torch.full((nt, kt), -1, dtype=torch.int32, device=dev), torch.zeros(nt + 1, dtype=torch.int32, device=dev),
            torch.zeros(0, dtype=torch.int32, device=dev), torch.zeros(0, dtype=torch.int32, device=dev))


def _fake_out(x: torch.Tensor, n: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], n))


@torch.library.custom_op("mosaic::dense_gemm", mutates_args=())
def dense_gemm(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
               n: int, k: int, gs_tiles: int) -> torch.Tensor:
    p = _packed_from_args(qweight, scales, zeros, *_empty_res(scales, qweight), n, k, gs_tiles)
    return launch(x, p, "dense")


@dense_gemm.register_fake
def _(x, qweight, scales, zeros, n, k, gs_tiles):
    return _fake_out(x, n)


@torch.library.custom_op("mosaic::zipper_gemm", mutates_args=())
def zipper_gemm(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                res_qweight: torch.Tensor, res_scales: torch.Tensor, res_bits: torch.Tensor,
                res_base: torch.Tensor, n: int, k: int, gs_tiles: int, res_windows: list[int]) -> torch.Tensor:
    e = _empty_res(scales, qweight)
    p = _packed_from_args(qweight, scales, zeros, res_qweight, res_scales, e[2], e[3], e[4], e[5], n, k, gs_tiles,
                          res_bits, res_base, res_windows)
    return launch(x, p, "zipper")


@zipper_gemm.register_fake
def _(x, qweight, scales, zeros, res_qweight, res_scales, res_bits, res_base, n, k, gs_tiles, res_windows):
    return _fake_out(x, n)


@torch.library.custom_op("mosaic::separate_gemm", mutates_args=())
def separate_gemm(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                  res_qweight: torch.Tensor, res_scales: torch.Tensor, csr_ptr: torch.Tensor,
                  csr_kt: torch.Tensor, csr_id: torch.Tensor, n: int, k: int, gs_tiles: int) -> torch.Tensor:
    e = _empty_res(scales, qweight)
    p = _packed_from_args(qweight, scales, zeros, res_qweight, res_scales, e[2], csr_ptr, csr_kt, csr_id,
                          n, k, gs_tiles)
    return launch(x, p, "separate")


@separate_gemm.register_fake
def _(x, qweight, scales, zeros, res_qweight, res_scales, csr_ptr, csr_kt, csr_id, n, k, gs_tiles):
    return _fake_out(x, n)


def call_op(x: torch.Tensor, p: PackedW4, variant: str) -> torch.Tensor:
    """Dispatch to the custom op of ``variant`` (what QuantLinear calls)."""
    if variant == "dense":
        return torch.ops.mosaic.dense_gemm(x, p.qweight, p.scales, p.zeros, p.out_features, p.in_features, p.gs_tiles)
    if variant == "zipper":
        return torch.ops.mosaic.zipper_gemm(x, p.qweight, p.scales, p.zeros, p.res_qweight, p.res_scales,
                                            p.res_bits, p.res_base, p.out_features, p.in_features, p.gs_tiles,
                                            list(p.res_windows) or [p.res_window_max] * 8)
    if variant == "separate":
        return torch.ops.mosaic.separate_gemm(x, p.qweight, p.scales, p.zeros, p.res_qweight, p.res_scales,
                                              p.res_csr_ptr, p.res_csr_kt, p.res_csr_id, p.out_features,
                                              p.in_features, p.gs_tiles)
    raise ValueError(f"unknown native variant {variant!r}")
