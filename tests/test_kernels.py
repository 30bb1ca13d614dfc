"""ZipperEngine W4A16 kernels: packing round-trips and reference QuantLinear (CPU, CI), native
kernels vs a float64 reference (GPU, ``-m gpu``).

Tolerances. The kernel multiplies fp16/bf16 activations with weights dequantized *in the
activation dtype* ((q - z) * s rounded once, plus the residual by one more rounding FMA) and
accumulates in fp32 on the tensor cores; the output is rounded to the activation dtype. The
reference is the float64 product of the same activations with the float32 dequantized weights
whose scales are pre-rounded to the activation dtype (``dequantize_like_kernel``: exactly what
the kernel reads). What remains is (1) per-weight rounding to the dtype (unit roundoff u =
2^-11 fp16, 2^-8 bf16; relative error uniform in [-u, u], rms u/sqrt(3); twice where a residual
is added), (2) fp32 accumulation (~1e-6, negligible), (3) output rounding (rms <= u/sqrt(3)).
Independent errors give a relative Frobenius error of about 1.5 u; we allow 3 u (REL_FRO:
1.5e-3 fp16, 1.2e-2 bf16). Element-wise, |err| <= 2u|ref| +
12 (u/sqrt(3)) rms(ref) (about 7 sigma of the accumulated weight rounding, so no false alarms
over millions of elements, while a wrong tile, row or column, which is off by O(rms), fails
even when the Frobenius norm hides it). Outputs are NaN-poisoned before each launch and must
come back finite.
"""

from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch

from mosaic_exp.kernels import (
    QuantLinear,
    UnsupportedFormat,
    VariantUnavailable,
    available_variants,
    dequantize_packed,
    pack_quantized,
    reference_gemm,
)
from mosaic_exp.kernels.native import native_status
from mosaic_exp.kernels.packing import dequantize_like_kernel, fragment_map, shuffle_units, unshuffle_units
from mosaic_exp.kernels.testing import random_quantized

UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
REL_FRO = {dt: 3 * u for dt, u in UNIT_ROUNDOFF.items()}

HAS_CUDA = torch.cuda.is_available()
NATIVE_OK, NATIVE_WHY = native_status() if HAS_CUDA else (False, "no CUDA device")
gpu = pytest.mark.gpu
needs_native = pytest.mark.skipif(not (HAS_CUDA and NATIVE_OK),
                                  reason="no CUDA device" if not HAS_CUDA else f"native module: {NATIVE_WHY}")


# ============================================================================ CPU: packing
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,k,gs,sym,budget,bs", [
    (576, 576, 128, False, 0.1, (128, 128)),     # short last group (576 = 4*128 + 64), N not /128
    (100, 200, 64, True, 0.5, (64, 64)),         # N, K not multiples of the tile
    (192, 1536, -1, False, 1.0, (128, 128)),     # per-channel, all blocks
    (130, 100, 64, False, 0.3, (64, 128)),       # non-square blocks, edges
    (256, 320, 128, True, 0.0, (128, 128)),      # no residual
    (320, 448, 64, False, 0.03, (64, 64)),       # odd multiples of the tile
])
def test_pack_roundtrip(dtype, n, k, gs, sym, budget, bs):
    qw = random_quantized(n, k, gs, sym, budget, bs)
    p = pack_quantized(qw, dtype)
    ref = dequantize_like_kernel(qw, dtype)
    assert p.qweight.shape == (p.n_pad // 64, p.k_pad // 64, 2048)
    assert (p.zeros is None) == sym
    for via in ("lut", "csr"):
        w = dequantize_packed(p, via=via)
        torch.testing.assert_close(w, ref, rtol=0, atol=1e-6)
    assert int((p.res_lut >= 0).sum()) == p.num_res_units


@pytest.mark.parametrize("n,k,budget,bs", [(576, 576, 0.1, (128, 128)), (192, 4160, 0.3, (64, 64)),
                                           (128, 9216, 1.0, (64, 64)), (256, 2048, 0.0, (128, 128))])
def test_residual_bit_words(n, k, budget, bs):
    """res_bits / res_base (what the zipper kernel reads) encode exactly res_lut: for every
    (nt, kt) with a residual, id = base[nt, kt//32] + #bits of word kt//32 below kt%32."""
    p = pack_quantized(random_quantized(n, k, 64, False, budget, bs), torch.float16)
    nt, kt = p.res_lut.shape
    kw = (kt + 31) // 32
    assert p.res_bits.shape == (nt, kw) and p.res_base.shape == (nt, kw)
    assert p.res_bits.dtype == torch.int32 and p.res_base.dtype == torch.int32
    words = p.res_bits.to(torch.int64) & 0xFFFFFFFF
    ids = torch.full((nt, kt), -1, dtype=torch.int64)
    for w in range(kw):
        for i in range(min(32, kt - 32 * w)):
            on = ((words[:, w] >> i) & 1).bool()
            below = words[:, w] & ((1 << i) - 1)
            cnt = torch.tensor([int(v).bit_count() for v in below])
            ids[on, 32 * w + i] = (p.res_base[:, w].to(torch.int64) + cnt)[on]
    assert torch.equal(ids, p.res_lut.to(torch.int64))
    if kt % 32:  # bits past KT are clear
        assert int((words[:, -1] >> (kt % 32)).sum()) == 0


def test_fragment_map_is_permutation():
    m = fragment_map()
    assert torch.equal(torch.sort(m).values, torch.arange(4096))
    codes = torch.randint(0, 16, (3, 64, 64), dtype=torch.uint8)
    assert torch.equal(unshuffle_units(shuffle_units(codes)), codes)


def test_per_block_residual_scale():
    qw = random_quantized(256, 256, 64, False, 0.5, (128, 128), per_block_scale=True)
    p = pack_quantized(qw, torch.float16)
    torch.testing.assert_close(dequantize_packed(p), dequantize_like_kernel(qw, torch.float16), rtol=0, atol=1e-6)


def test_resident_lead_rule():
    """NOTES.md v20's planner rule ($MOSAIC_ZIPPER_RESIDENT_LEAD, on by default): the shortest lead only when the
    chosen ring leaves clusters of the grid non-resident and the shorter ring lets all of them be resident."""
    from mosaic_exp.kernels import ops

    resident = {4: 62, 2: 77, 1: 77}.get  # clusters resident with that many ring slots (o at M = 16, cfg 11)
    assert ops.resident_lead(64, 4, 2, resident)  # two 32-cluster grids (PDL): 62 with the 4-slot ring, 77 with 2
    assert not ops.resident_lead(60, 4, 2, resident)  # already resident
    assert not ops.resident_lead(80, 4, 2, resident)  # resident with neither ring: keep the longer lead
    assert not ops.resident_lead(64, 2, 2, resident)  # no smaller ring to gain


def test_pack_rejects_unsupported():
    with pytest.raises(UnsupportedFormat, match="group size"):
        pack_quantized(random_quantized(64, 256, 32), torch.float16)
    with pytest.raises(UnsupportedFormat, match="block shape"):
        pack_quantized(random_quantized(128, 128, 64, budget=0.5, block_shape=(32, 32)), torch.float16)
    with pytest.raises(UnsupportedFormat, match="dtype"):
        pack_quantized(random_quantized(64, 64, 64), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_pack_rejects_residual_on_a_zero_base_scale(dtype):
    """The small-M kernel adds (r - 8) rs/s to (q - z): a residual row whose base scale is 0 (or, in fp16,
    whose rs/s would overflow) is rejected at packing, naming the row; the same row without a residual
    packs."""
    qw = random_quantized(128, 256, 128, False, 0.1, (64, 64), seed=3)  # the corner block (rows 64-127) is in
    scales = qw.base_scales.clone()
    scales[100, 1] = 0.0
    with pytest.raises(UnsupportedFormat, match="residual row 100 at k-tile 3"):
        pack_quantized(dataclasses.replace(qw, base_scales=scales), dtype)
    no_res = dict(res_index=torch.zeros(0, 2, dtype=torch.int32), res_qweight=torch.zeros(0, 64, 32, dtype=torch.uint8),
                  res_scales=torch.zeros(0, 64, dtype=qw.res_scales.dtype))
    pack_quantized(dataclasses.replace(qw, base_scales=scales, **no_res), dtype)
    if dtype == torch.float16:
        scales = qw.base_scales.clone()
        scales[100, 1] = 1e-7  # rs / s ~ 3e4 > 2048
        with pytest.raises(UnsupportedFormat, match="ratio <= 2048"):
            pack_quantized(dataclasses.replace(qw, base_scales=scales), dtype)


# ============================================================================ CPU: reference / registry
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_reference_quantlinear_cpu(dtype):
    qw = random_quantized(192, 576, 128, False, 0.1)
    bias = torch.randn(192)
    m = QuantLinear.from_quantized(qw, bias, "reference", dtype)
    x = torch.randn(2, 5, 576).to(dtype)
    y = m(x)
    assert y.shape == (2, 5, 192) and y.dtype == dtype and m.last_kernel == "reference"
    ref = reference_gemm(x.reshape(10, 576), qw) + bias.double()
    err = (y.reshape(10, 192).double() - ref).norm() / ref.norm()
    assert err < (REL_FRO.get(dtype, 1e-6) * 2 if dtype != torch.float32 else 1e-5), float(err)


def test_registry_unknown_variant():
    qw = random_quantized(64, 64, 64)
    with pytest.raises(VariantUnavailable, match="unknown kernel variant 'marlin'"):
        QuantLinear.from_quantized(qw, None, "marlin", torch.float16)


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-CUDA error path")
@pytest.mark.parametrize("variant", ["dense", "separate", "zipper"])
def test_registry_native_unavailable_without_cuda(variant):
    with pytest.raises(VariantUnavailable, match=f"'{variant}' unavailable: no CUDA device"):
        QuantLinear.from_quantized(random_quantized(64, 64, 64), None, variant, torch.float16)
    assert available_variants()["reference"] == "ok"


def test_native_import_is_lazy():
    import subprocess
    import sys

    code = ("import sys, mosaic_exp.kernels, mosaic_exp.kernels.ops; "
            "from mosaic_exp.kernels import native; "
            "assert not native._state and '_mosaic_native' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_shapes_name_m_n_k():
    from mosaic_exp.kernels import ops

    with pytest.raises(ValueError, match=r"m=3, n=192, k=576"):
        ops.check_inputs(torch.empty(3, 500, dtype=torch.float16), 192, 576, torch.float16)
    with pytest.raises(TypeError, match=r"m=3, n=192, k=576"):
        ops.check_inputs(torch.empty(3, 576, dtype=torch.float32), 192, 576, torch.float16)
    with pytest.raises(TypeError, match=r"m=3, n=192, k=576"):
        ops.check_inputs(torch.empty(3, 576, dtype=torch.bfloat16), 192, 576, torch.float16)
    with pytest.raises(ValueError, match=r"m=3, n=192, k=576.*CUDA"):
        ops.check_inputs(torch.empty(3, 576, dtype=torch.float16), 192, 576, torch.float16)


def test_fake_impl_meta_shapes():
    from mosaic_exp.kernels import ops

    qw = random_quantized(192, 576, 128, False, 0.1)
    p = pack_quantized(qw, torch.float16).to("meta")
    x = torch.empty(2, 7, 576, dtype=torch.float16, device="meta")
    for v in ("dense", "zipper", "separate"):
        y = ops.call_op(x, p, v)
        assert y.shape == (2, 7, 192) and y.dtype == torch.float16


# ============================================================================ GPU: kernels
def _check(y: torch.Tensor, ref: torch.Tensor, dtype, what: str):
    assert torch.isfinite(y).all(), f"{what}: non-finite output (unwritten poisoned elements?)"
    y = y.double()
    u = UNIT_ROUNDOFF[dtype]
    rel = float((y - ref).norm() / ref.norm().clamp_min(1e-30))
    assert rel < REL_FRO[dtype], f"{what}: relative Frobenius error {rel:.2e} >= {REL_FRO[dtype]:.2e}"
    rms = float(ref.pow(2).mean().sqrt())
    bound = 2 * u * ref.abs() + 12 * u / math.sqrt(3) * rms
    bad = (y - ref).abs() > bound
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements over the element-wise bound, first at "
                           f"{tuple(torch.nonzero(bad)[0].tolist())}")


def _base_only(qw):
    """The same quantized weight without its residual blocks (the dense variant's reference)."""
    kw = {f: getattr(qw, f) for f in qw.__dataclass_fields__ if f not in ("res_index", "res_qweight", "res_scales")}
    return type(qw)(**kw)


def _run_case(m, n, k, gs, sym, budget, bs, dtype, variants=("dense", "separate", "zipper"), seed=None,
              cfg=None, splitk=None, zprologue=None, fixup=None, pdl=None, rlead=None, path=None, gemv=None,
              wgmma=None, balance=None, x_shift=0.0):
    from mosaic_exp.kernels import ops

    dev = torch.device("cuda")
    qw = random_quantized(n, k, gs, sym, budget, bs, seed=seed)
    p = pack_quantized(qw, dtype, dev)
    x = (torch.randn(m, k, device=dev) + x_shift).to(dtype)
    w_full = dequantize_like_kernel(qw, dtype).to(dev)
    ref_full = x.double() @ w_full.double().t()
    for v in variants:
        if v == "dense":
            ref = x.double() @ dequantize_like_kernel(_base_only(qw), dtype).to(dev).double().t()
        else:
            ref = ref_full
        out = torch.full((m, n), float("nan"), dtype=dtype, device=dev)
        y = ops.launch(x, p, v, out=out, cfg=cfg, splitk=splitk, zprologue=zprologue if v == "zipper" else None,
                       fixup=fixup, pdl=pdl, rlead=rlead if v == "zipper" else None, path=path, gemv=gemv,
                       wgmma=wgmma, balance=balance)
        torch.cuda.synchronize()
        assert y.data_ptr() == out.data_ptr()
        _check(y, ref, dtype, f"{v} m={m} n={n} k={k} gs={gs} sym={sym} budget={budget} bs={bs} {dtype} "
                              f"{ops.LAST_LAUNCH.get('kernels')}")


M_ALL = [1, 2, 3, 7, 16, 33, 64, 127, 256, 1000, 4096]


@gpu
@needs_native
@pytest.mark.parametrize("path", [None, "tiled"])  # default routing (wgmma from M=128 on an H100), tiled
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", M_ALL)
def test_all_m(m, dtype, path):
    _run_case(m, 1536, 576, 128, False, 0.1, (128, 128), dtype, path=path)   # SmolLM2 down_proj (K=576 short group)


SHAPES = [  # (n, k): real model shapes, odd multiples of the tile, ragged edges
    (576, 576), (192, 576), (1536, 576), (576, 1536), (6144, 4096), (4096, 14336), (64 * 3, 64 * 5),
    (64 * 7, 64 * 9), (100, 200), (130, 104), (72, 100),
]


@gpu
@needs_native
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("m,path", [(1, None), (33, None), (256, None), (256, "tiled")])
def test_shapes(m, n, k, dtype, path):
    _run_case(m, n, k, 64, True, 0.1, (64, 64), dtype, path=path)


@gpu
@needs_native
@pytest.mark.parametrize("budget", [0.0, 0.03, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("bs", [(64, 64), (128, 128)])
@pytest.mark.parametrize("gs,sym", [(64, True), (64, False), (128, True), (128, False), (-1, True), (-1, False)])
@pytest.mark.parametrize("m", [1, 16, 127, 200])
def test_budgets_groups(m, gs, sym, bs, budget):
    dtype = torch.bfloat16 if (m + gs) % 2 else torch.float16
    _run_case(m, 768, 1152, gs, sym, budget, bs, dtype)


@gpu
@needs_native
@pytest.mark.parametrize("cfg,m", [(8, 64), (8, 41), (9, 32), (9, 17)])
@pytest.mark.parametrize("dtype,sym,bs", [(torch.float16, True, (128, 128)), (torch.bfloat16, False, (64, 64))])
def test_eight_warp_configs(cfg, m, dtype, sym, bs):
    """The 8-warp configs (two warps along K) at the M they are meant for, both dtypes, both zero-point modes,
    a planner-chosen split (None) and an odd N / K (N = 3 x 128 + 64, K = 64 x 37)."""
    _run_case(m, 448, 64 * 37, 64, sym, 0.1, bs, dtype, cfg=cfg)


@gpu
@needs_native
@pytest.mark.parametrize("cfg,m,rlead", [(10, 64, None), (10, 41, None), (10, 33, 2), (11, 16, 1), (11, 9, None),
                                         (11, 13, 3), (12, 32, None), (12, 17, 3), (12, 27, None)])
@pytest.mark.parametrize("dtype,sym,bs", [(torch.float16, True, (128, 128)), (torch.bfloat16, False, (64, 64))])
def test_bounded_zipper_configs(cfg, m, rlead, dtype, sym, bs):
    """cfg 10 / 11 / 12 (the cfg 2 / 4 / 5 tiles, 3 / 5 / 4 stages, zipper bounded to 5 / 5 / 4 CTAs per SM) at the M
    they are meant for, both dtypes and zero-point modes, the planner's split and lead or a forced lead, odd N / K,
    dense residual maps (budget 0.5)."""
    _run_case(m, 448, 64 * 37, 64, sym, 0.5, bs, dtype, cfg=cfg, rlead=rlead, path="tiled")


@gpu
@needs_native
@pytest.mark.parametrize("cfg,dense_cfg,rslots", [(10, 2, 3), (11, 4, 2)])
def test_five_cta_zipper_residency(cfg, dense_cfg, rslots):
    """What cfg 10 / 11 are for: their zipper kernel's split-8 clusters are as resident as the dense kernel of the
    same tile (cfg 2 / 4: 5 CTAs per SM), where the cfg 2 / 4 zipper's are fewer (4 per SM by registers)."""
    from mosaic_exp.kernels import ops

    dense = ops.max_active_clusters(dense_cfg, ops.MODE_DENSE, 8, 1)
    assert ops.max_active_clusters(cfg, ops.MODE_ZIPPER, 8, rslots) == dense > 0
    assert ops.max_active_clusters(dense_cfg, ops.MODE_ZIPPER, 8, rslots) < dense
    assert ops._config(cfg, ops.MODE_ZIPPER)["regs"] <= 65536 // (5 * 128)


@gpu
@needs_native
def test_cfg12_zipper_residency():
    """cfg 12 (NOTES.md v21): the cfg 5 tile's zipper at 4 CTAs per SM with the full 4-slot ring, where cfg 5's fits 3
    (shared memory): more resident split-K clusters of every size the planner uses."""
    from mosaic_exp.kernels import ops

    assert ops._config(12, ops.MODE_ZIPPER)["regs"] <= 65536 // (4 * 128)
    for splitk in (2, 4, 8, 16):
        assert ops.max_active_clusters(12, ops.MODE_ZIPPER, splitk, 4) > ops.max_active_clusters(5, ops.MODE_ZIPPER, splitk, 4)


@gpu
@needs_native
@pytest.mark.parametrize("cfg", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
@pytest.mark.parametrize("splitk,fixup", [(1, None), (3, "cluster"), (7, "cluster"), (3, "global"), (7, "global")])
def test_configs_splitk(cfg, splitk, fixup):
    """Every tile config with forced split-K factors (the planner only picks some combinations),
    both split-K fix-ups (thread-block cluster through DSMEM, global partials + counters); cfg 8 / 9 are the
    8-warp ones (two warps along K, summed in shared memory before either fix-up), cfg 10 / 11 / 12 the bounded zippers."""
    _run_case(70, 640, 1408, 128, False, 0.2, (64, 64), torch.bfloat16, cfg=cfg, splitk=splitk, fixup=fixup)


@gpu
@needs_native
@pytest.mark.parametrize("splitk", [2, 5, 8, 11, 16])
@pytest.mark.parametrize("m", [1, 3, 16])
@pytest.mark.parametrize("pdl", ["early", "late", False])
def test_cluster_fixup_splits(splitk, m, pdl):
    """Cluster split-K fix-up at every cluster size class: portable (<= 8) and non-portable (11, 16),
    odd M (rows of the tile past M are never stored), with and without PDL."""
    _run_case(m, 384, 64 * 48, 128, False, 0.1, (64, 64), torch.float16 if m % 2 else torch.bfloat16,
              splitk=splitk, fixup="cluster", pdl=pdl)


@gpu
@needs_native
@pytest.mark.parametrize("zprologue", ["first"])
@pytest.mark.parametrize("cfg,splitk", [(None, None), (4, 3), (0, 1), (3, 2), (6, 7), (7, 1), (7, 3)])
@pytest.mark.parametrize("budget,bs", [(0.1, (64, 64)), (0.5, (128, 128)), (1.0, (64, 64))])
@pytest.mark.parametrize("fixup", ["cluster", "global"])
def test_zipper_prologue_schemes(zprologue, cfg, splitk, budget, bs, fixup):
    """Both zipper prologue schemes (residual units of the first tiles sent late in their own
    group, or with their base tiles after the bit words arrived), dense residual maps included
    (every prologue tile has a residual), long K (bit-word windows move several times)."""
    m = 70 if cfg in (3, 6) else 5
    _run_case(m, 256, 64 * 150, 128, False, budget, bs, torch.bfloat16, variants=("zipper",), cfg=cfg,
              splitk=splitk, zprologue=zprologue, fixup=fixup)


@gpu
@needs_native
@pytest.mark.parametrize("rlead", [1, 2, 3, 4, None])
@pytest.mark.parametrize("cfg,splitk,m", [(None, None, 1), (4, 3, 9), (0, 2, 5), (6, 1, 40), (3, 2, 70), (11, 8, 16)])
@pytest.mark.parametrize("budget,bs", [(0.1, (64, 64)), (0.5, (128, 128)), (1.0, (64, 64))])
def test_zipper_residual_lead(rlead, cfg, splitk, m, budget, bs):
    """'first' prologue with a residual lead shorter than the pipeline (the ring then holds the
    densest window of lead+1 k-tiles; residual tiles wait for the older group): every lead a config
    allows, dense residual maps (every tile has a residual), long K."""
    from mosaic_exp.kernels import ops

    pro = ops._config(cfg if cfg is not None else ops.default_cfg(m), ops.MODE_ZIPPER)["stages"] - 1
    if rlead is not None and (rlead > pro or (pro + 1 <= 4 and rlead != pro)):
        pytest.skip(f"lead {rlead}: config has STAGES-1 = {pro} (shorter leads need > 4 stages)")
    _run_case(m, 256, 64 * 150, 128, False, budget, bs, torch.bfloat16, variants=("zipper",), cfg=cfg,
              splitk=splitk, zprologue="first", rlead=rlead, path="tiled")
    if rlead is not None and rlead < pro:
        assert f"lead{rlead}]" in ops.LAST_LAUNCH["kernels"][0]


@gpu
@needs_native
@pytest.mark.parametrize("cfg,m", [(4, 16), (11, 9), (12, 32), (10, 64), (6, 40), (7, 5)])
@pytest.mark.parametrize("splitk,fixup", [(5, "cluster"), (8, "global"), (3, "cluster")])
@pytest.mark.parametrize("budget,bs", [(0.1, (128, 128)), (0.3, (64, 64))])
@pytest.mark.parametrize("balance", [True, False])
def test_balanced_splitk(cfg, m, splitk, fixup, budget, bs, balance):
    """NOTES.md v22: the zipper's split-K ranges balanced by work (Params::split_bounds, every range non-empty,
    uneven per n column; the default) and the kernel's uniform ranges (balance=False, $MOSAIC_ZIPPER_BALANCED_SPLITK=0)
    against the reference, both fix-ups, odd N / K (ragged last k-tile and n-tile)."""
    from mosaic_exp.kernels import ops

    if balance and not ops.balanced_splitk_built():
        pytest.skip("native module built with -DMOSAIC_BALANCED_SPLITK=0 (the pre-v22 build)")
    # seed 0: a residual map where every case has a column to rebalance (~2 % of random maps have none: the
    # launch then keeps the uniform cuts and says so)
    _run_case(m, 448, 64 * 40 + 24, 64, False, budget, bs, torch.bfloat16 if m % 2 else torch.float16,
              variants=("zipper",), cfg=cfg, splitk=splitk, fixup=fixup, balance=balance, path="tiled", seed=0)
    assert (",balanced" in ops.LAST_LAUNCH["kernels"][0]) == balance, ops.LAST_LAUNCH["kernels"]


@gpu
@needs_native
def test_balanced_splitk_under_graph_capture():
    """The balanced cuts are computed on the CPU at a (weight, plan)'s first launch: under CUDA graph capture that
    launch is a clear error naming the way out (not a broken capture); after one eager launch the capture uses the
    cached table and replays to the reference."""
    from mosaic_exp.kernels import ops

    if not ops.balanced_splitk_built():
        pytest.skip("native module built with -DMOSAIC_BALANCED_SPLITK=0 (the pre-v22 build)")
    dev, dtype = torch.device("cuda"), torch.float16
    k = 64 * 40 + 24
    qw = random_quantized(448, k, 64, False, 0.1, (128, 128), seed=0)
    p = pack_quantized(qw, dtype, dev)
    x = torch.randn(16, k, device=dev).to(dtype)
    y = torch.empty(16, 448, dtype=dtype, device=dev)
    kw = dict(out=y, cfg=4, splitk=5, fixup="global", path="tiled")
    ops._SPLIT_BOUNDS.clear()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        ops.launch(x, p, "zipper", balance=False, **kw)  # workspace allocations outside the capture
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    with (pytest.raises(RuntimeError, match="under CUDA graph capture.*MOSAIC_ZIPPER_BALANCED_SPLITK=0"),
          torch.cuda.graph(torch.cuda.CUDAGraph())):
        ops.launch(x, p, "zipper", balance=True, **kw)
    torch.cuda.synchronize()
    ops.launch(x, p, "zipper", balance=True, **kw)
    assert ",balanced" in ops.LAST_LAUNCH["kernels"][0], ops.LAST_LAUNCH["kernels"]
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        ops.launch(x, p, "zipper", balance=True, **kw)
    y.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    ref = x.double() @ dequantize_like_kernel(qw, dtype).to(dev).double().t()
    _check(y, ref, dtype, f"captured balanced zipper {ops.LAST_LAUNCH['kernels']}")


def test_zipper_ring_choice():
    """Host side of the residual lead: the ring fits the densest window of lead+1 tiles, capped."""
    from mosaic_exp.kernels import ops
    from mosaic_exp.kernels.packing import PackedW4

    qw = random_quantized(256, 64 * 40, 128, False, 1.0, (64, 64))
    p = pack_quantized(qw, torch.float16)
    assert p.res_windows == tuple(range(1, 9))  # every tile has a residual: window w holds w units
    ops._cfg_cache[(4, ops.MODE_ZIPPER)] = {"stages": 6}  # no native module needed (CPU)
    try:
        assert ops.zipper_ring(p, 4, "first") == (ops.RING_SLOTS_CAP - 1, ops.RING_SLOTS_CAP)
        assert ops.zipper_ring(p, 4, "first", rlead=5) == (0, 6)
        assert ops.zipper_ring(p, 4, "first", rlead=2) == (2, 3)
        q = pack_quantized(random_quantized(256, 64 * 40, 128, False, 0.0), torch.float16)
        assert ops.zipper_ring(q, 4, "first") == (0, 1)
    finally:
        ops._cfg_cache.pop((4, ops.MODE_ZIPPER), None)
    assert isinstance(p, PackedW4)


@gpu
@needs_native
@pytest.mark.parametrize("m", [1, 70])
def test_more_residual_tiles_than_prefetch(m):
    """> 128 residual tiles per CTA row: the LUT/CSR prefetch (128 entries) falls back to global reads."""
    _run_case(m, 128, 9216, 128, False, 1.0, (64, 64), torch.bfloat16, splitk=1)


GEMV_PLANS = [(w, kp, sk) for w in (4, 8, 16) for kp in (1, 2, 4, 8, 16) for sk in (1, 3, 8) if w % kp == 0]


@gpu
@needs_native
@pytest.mark.parametrize("warps,kparts,splitk", GEMV_PLANS)
@pytest.mark.parametrize("m", [1, 3, 9, 16, 17, 32])
def test_gemv_every_plan(warps, kparts, splitk, m):
    """Small-M kernel with every (warps per CTA, warps per slice, CTAs per slice group) plan: slices
    past Np in the last CTA, warps and whole CTAs whose K range is empty, K ranges straddling scale
    groups, M in every row block (8 | 16 | 32, full and partial), ragged N and K, a dense residual map
    (every bit-word window moves), both dtypes."""
    from mosaic_exp.kernels import ops
    from mosaic_exp.kernels.native import load_native

    dtype = torch.float16 if (m + kparts + splitk) % 2 else torch.bfloat16
    _run_case(m, 400, 64 * 5 + 24, 64, False, 0.5, (64, 64), dtype, path="gemv", gemv=(warps, kparts, splitk))
    try:
        _run_case(m, 1536, 64 * 70, 128, True, 0.1, (128, 128), dtype, path="gemv", gemv=(warps, kparts, splitk))
    except ValueError as e:  # a plan whose CTA stages more X rows, scales and residual rings than fit
        nat = load_native()
        ktpw = -(-70 // (splitk * kparts))
        smem = nat.gemv_smem_bytes(70, 2, kparts * ktpw, warps // kparts, 0, warps, ops.MODE_ZIPPER, ops.gemv_mb(m), m)
        assert "no small-M plan fits" in str(e) and smem > nat.GEMV_SMEM_MAX, (str(e), smem)


@gpu
@needs_native
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("gs,sym", [(64, True), (128, False), (-1, False), (-1, True)])
@pytest.mark.parametrize("m", [1, 3, 8])
def test_small_m_offset_activations(m, gs, sym, dtype):
    """Activations with a large common offset (mean 8, std 1): a kernel that takes q - z apart, E + q in the MMA and
    (E + z) sum x subtracted per scale group (MOSAIC_GEMV_ZERO_FOLD builds, NOTES.md v29), cancels about E * 8 * 128
    per group (the whole K with per-channel scales) and must still meet the usual bound; ragged K (67 k-tiles:
    groups straddle the warps' K ranges), the default small-M routing."""
    _run_case(m, 1024, 64 * 67, gs, sym, 0.03, (128, 128), dtype, x_shift=8.0)


@gpu
@needs_native
@pytest.mark.parametrize("budget", [0.0, 0.03, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("gs,sym", [(64, True), (128, False), (-1, False), (-1, True)])
@pytest.mark.parametrize("m", [1, 7, 16, 24, 72])
def test_gemv_budgets_groups(m, gs, sym, budget):
    """Small-M kernel on every budget and group size (M=72: three 32-row z-slices of one launch, the last
    one partial)."""
    dtype = torch.bfloat16 if (m + gs) % 2 else torch.float16
    _run_case(m, 768, 1152 + 64 * 40, gs, sym, budget, (64, 64) if budget < 0.5 else (128, 128), dtype,
              path="gemv")
    from mosaic_exp.kernels import ops

    assert ops.LAST_LAUNCH["kernels"][0].startswith("gemv-")


@gpu
@needs_native
def test_gemv_plan_fits_and_default_routing(monkeypatch, tmp_path):
    """The planner's choice is resident (registers, shared memory); by default M <= 8 routes to the gemv
    path with the first one-wave plan (LLaMA-3 o / down: one slice per CTA, qkv: two, gate_up: eight), and
    to the tiled kernel where none fits; M = 9..32 routes to the gemv plan of the device's route table
    where it has one for the shape and mode, else to the tiled kernel."""
    import json
    from types import SimpleNamespace

    from mosaic_exp.kernels import ops

    monkeypatch.delenv("MOSAIC_GEMV_MAX_M", raising=False)
    monkeypatch.delenv("MOSAIC_GEMV_PLAN", raising=False)
    monkeypatch.setenv("MOSAIC_GEMV_ROUTES", "off")
    assert ops.gemv_max_m() == 32
    for (n, k, want) in ((4096, 4096, (16, 16, 1)), (6144, 4096, (16, 8, 1)), (4096, 14336, (16, 16, 1)),
                         (28672, 4096, (16, 2, 1)), (28672 * 4, 4096, None)):
        packed = SimpleNamespace(n_pad=n, k_pad=k, gs_tiles=2, zeros=object())
        gp = ops.gemv_default_plan(1, packed, ops.MODE_DENSE, 132)
        assert (gp and (gp.warps, gp.kparts, gp.splitk)) == want, (n, k, gp)
        gp = ops.gemv_default_plan(1, packed, ops.MODE_ZIPPER, 132)
        assert (gp and (gp.warps, gp.kparts, gp.splitk)) == (want if n != 6144 else (8, 8, 1)), (n, k, gp)
    qw = random_quantized(4096, 4096, 128, False, 0.03)
    p = pack_quantized(qw, torch.bfloat16, "cuda")
    for m in (1, 2, 8, 9):  # no route table: M = 9 runs the tiled kernel
        ops.launch(torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16), p, "zipper")
        kern = ops.LAST_LAUNCH["kernels"][0]
        assert kern.startswith("gemv-zipper[mb1,warps16,kparts16,splitk1") if m <= 8 else not kern.startswith("gemv"), kern
    # LLaMA-3 down (K = 14336): the X rows of one CTA grow with M; at M = 4 only a K split over a cluster
    # of 2 CTAs fills one wave, from M = 7 nothing does
    packed = SimpleNamespace(n_pad=4096, k_pad=14336, gs_tiles=2, zeros=object())
    for m, want in ((3, (16, 16, 1)), (4, (16, 8, 2)), (6, (16, 8, 2)), (7, None), (8, None)):
        gp = ops.gemv_default_plan(m, packed, ops.MODE_DENSE, 132)
        assert (gp and (gp.warps, gp.kparts, gp.splitk)) == want, (m, gp)

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for (n, k) in ((6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336)):
        for mode in (ops.MODE_DENSE, ops.MODE_ZIPPER):
            gp = ops.gemv_plan(1, n, k, 2, True, mode, sms)
            assert gp.ctas_per_sm >= 1 and gp.splitk * gp.kparts * gp.ktpw >= k // 64
    # a route table for this device: 16-row blocks of the zipper on (4096, 512) take (16, 4, 2), its 32-row
    # blocks the tiled kernel; the dense kernel has no entry (tiled)
    table = {"device": torch.cuda.get_device_name(), "routes": [
        {"n_pad": 4096, "k_pad": 512, "mode": "zipper", "mb": 2, "plan": [16, 4, 2]},
        {"n_pad": 4096, "k_pad": 512, "mode": "zipper", "mb": 4, "plan": "tiled"}]}
    (tmp_path / "routes.json").write_text(json.dumps(table))
    monkeypatch.setenv("MOSAIC_GEMV_ROUTES", str(tmp_path / "routes.json"))
    qw = random_quantized(4096, 512, 128, False, 0.1)
    p = pack_quantized(qw, torch.float16, "cuda")
    for m, want in ((9, "gemv-zipper[mb2,warps16,kparts4,splitk2"), (16, "gemv-zipper[mb2,warps16,kparts4,splitk2"),
                    (17, "zipper[cfg"), (32, "zipper[cfg")):
        ops.launch(torch.randn(m, 512, device="cuda", dtype=torch.float16), p, "zipper")
        assert ops.LAST_LAUNCH["kernels"][0].startswith(want), (m, ops.LAST_LAUNCH)
    ops.launch(torch.randn(16, 512, device="cuda", dtype=torch.float16), p, "dense")
    assert not ops.LAST_LAUNCH["kernels"][0].startswith("gemv-")
    ops.launch(torch.randn(16, 512, device="cuda", dtype=torch.float16), p, "zipper", cfg=4)
    assert ops.LAST_LAUNCH["kernels"][0].startswith("zipper[cfg4")


@gpu
@needs_native
def test_route_table_tiled_and_wgmma_plans(monkeypatch, tmp_path):
    """M = 17..64 take the tiled or wgmma plan that the device's route table names (NOTES.md v17), results
    against the reference; an explicit cfg / splitk / path still overrides the table."""
    import json

    from mosaic_exp.kernels import ops

    mb8 = {"wgmma": [64, 2, 1]} if IS_SM90 else {"tiled": [9, 4]}
    table = {"device": torch.cuda.get_device_name(), "routes": [
        {"n_pad": 512, "k_pad": 1152, "mode": "dense", "mb": 4, "plan": {"tiled": [9, 3]}},
        {"n_pad": 512, "k_pad": 1152, "mode": "zipper", "mb": 8, "plan": {"tiled": [8, 5]}},
        {"n_pad": 512, "k_pad": 1152, "mode": "dense", "mb": 8, "plan": mb8}]}
    (tmp_path / "routes.json").write_text(json.dumps(table))
    monkeypatch.setenv("MOSAIC_GEMV_ROUTES", str(tmp_path / "routes.json"))
    qw = random_quantized(448, 1100, 64, False, 0.1, (64, 64), seed=5)
    p = pack_quantized(qw, torch.bfloat16, "cuda")
    ref_w = {v: dequantize_like_kernel(q, torch.bfloat16).cuda().double() for v, q in (("zipper", qw), ("dense", _base_only(qw)))}
    mb8_name = "wgmma-dense[bt64,wgs2,splitk1" if IS_SM90 else "dense[cfg9,splitk4"
    for m, v, want in ((24, "dense", "dense[cfg9,splitk3"), (24, "zipper", "zipper[cfg5"),
                       (40, "zipper", "zipper[cfg8,splitk5"), (64, "zipper", "zipper[cfg8,splitk5"),
                       (50, "dense", mb8_name), (65, "zipper", None)):
        x = torch.randn(m, 1100, device="cuda", dtype=torch.bfloat16)
        out = torch.full((m, 448), float("nan"), dtype=torch.bfloat16, device="cuda")
        y = ops.launch(x, p, v, out=out)
        kern = ops.LAST_LAUNCH["kernels"][0]
        assert want is None or kern.startswith(want), (m, v, kern)
        _check(y, x.double() @ ref_w[v].t(), torch.bfloat16, f"{v} m={m} {kern}")
    ops.launch(torch.randn(40, 1100, device="cuda", dtype=torch.bfloat16), p, "zipper", cfg=6)
    assert ops.LAST_LAUNCH["kernels"][0].startswith("zipper[cfg6")


IS_SM90 = HAS_CUDA and torch.cuda.get_device_capability()[0] == 9
needs_sm90 = pytest.mark.skipif(not IS_SM90, reason="the wgmma kernels need an sm_90 GPU")


@gpu
@needs_native
@needs_sm90
@pytest.mark.parametrize("bt,wgs,splitk", [(64, 2, 1), (128, 2, 1), (64, 4, 1), (128, 4, 1), (64, 2, 3),
                                           (128, 2, 8), (64, 2, 8), (64, 4, 2), (128, 4, 5), (128, 3, 1), (256, 3, 1),
                                           (128, 3, 2), (128, 3, 4), (128, 3, 8), (256, 3, 3),
                                           (8, 3, 1), (8, 3, 4), (16, 3, 2), (32, 3, 8), (64, 3, 1), (64, 3, 3)])
@pytest.mark.parametrize("m", [1, 3, 64, 65, 127, 256, 1000])
@pytest.mark.parametrize("n,k,gs,sym,budget,bs", [
    (1536, 576, 128, False, 0.1, (128, 128)),     # short last group
    (400, 64 * 5 + 24, 64, False, 0.5, (64, 64)),  # ragged N (not /8: scalar stores) and K, dense residual
    (384, 1408, -1, True, 1.0, (64, 64)),          # per-channel, symmetric, every block
    (256, 64 * 70, 128, False, 0.03, (128, 128)),  # long K (bit-word windows move), 3 %
    (130, 104, 64, True, 0.0, (64, 64)),           # no residual, tiny
])
def test_wgmma_shapes(bt, wgs, splitk, m, n, k, gs, sym, budget, bs):
    """wgmma kernels (every CTA tile) against the reference: M below, at and past the token tile
    (partial token tiles, rows past M, several token tiles of the small warp-specialized tiles), ragged
    N/K (with wgs 4: warpgroups past Np), every group kind, budgets 0..1, both dtypes; split-K over a
    cluster (the sum through DSMEM, each rank storing its share of the tile; splits shorter than the
    pipeline, splits not starting on a bit-word boundary); the large warp-specialized tiles' split-K through
    global partials (the last split of each tile sums them in split order; grids of one wave and of several, m =
    1000 at n = 1536: 96 tiles x 2+ splits), or, in a MOSAIC_WS_BIG_SPLIT_FIXUP=1 build, through a cluster of the
    tile's splits (each rank sums and stores its share of rows)."""
    kt = (k + 63) // 64
    if splitk > kt:
        pytest.skip(f"splitk {splitk} > {kt} k-tiles")
    dtype = torch.float16 if (m + bt + wgs + n + splitk) % 2 else torch.bfloat16
    _run_case(m, n, k, gs, sym, budget, bs, dtype, path="wgmma", wgmma=(bt, wgs, splitk))
    from mosaic_exp.kernels import ops

    sk = -(-kt // -(-kt // splitk))  # the binding drops empty splits
    tag = f"[bt{bt},wgs{wgs},splitk{sk}"  # then ']' or the PDL mode
    assert ops.LAST_LAUNCH["kernels"][0].startswith("wgmma-") and tag in ops.LAST_LAUNCH["kernels"][0]


def test_ws_big_split_rule(monkeypatch):
    """The large warp-specialized tile's K split (a pure function of the SM count, no GPU): a grid of fewer CTAs
    than SMs is split until one wave is full, >= 8 k-tiles per split, no empty split; $MOSAIC_WS_BIG_SPLITK fixes
    the count (1 = never split) and is validated (NOTES.md v26)."""
    from mosaic_exp.kernels import ops

    monkeypatch.delenv("MOSAIC_WS_BIG_SPLITK", raising=False)
    assert ops.wgmma_tile(256, 4096, 4096, 132) == (128, 3, 2)       # 64 CTAs x 2
    assert ops.wgmma_tile(128, 4096, 4096, 132) == (128, 3, 4)       # 32 CTAs x 4
    assert ops.wgmma_tile(128, 6144, 4096, 132) == (128, 3, 2)       # 48 x 2 (x 3 = 144 > 132)
    assert ops.wgmma_tile(128, 4096, 14336, 132) == (128, 3, 4)      # 32 CTAs, long K
    assert ops.wgmma_tile(256, 4096, 14336, 132) == (128, 3, 2)      # 64 CTAs
    assert ops.wgmma_tile(512, 4096, 4096, 132) == (128, 3, 1)       # 128 CTAs: one wave already
    assert ops.wgmma_tile(128, 28672, 4096, 132) == (128, 3, 1)      # 224 CTAs
    assert ops.wgmma_tile(65, 4096, 512, 132) == (128, 3, 1)         # 8 k-tiles: no split below 8 per split
    assert ops.wgmma_tile(65, 4096, 64 * 20, 132) == (128, 3, 2)     # 20 k-tiles: 2 splits of 10
    assert ops.wgmma_tile(65, 4096, 64 * 20, 16) == (128, 3, 1)      # 16 SMs: 32 CTAs fill them
    assert ops.ws_big_splitk(4, 9, 132) == 1                         # 9 k-tiles: one split of >= 8
    assert ops.ws_big_splitk(4, 17, 132) == 2                        # 2 splits of 9 and 8
    assert ops.ws_big_splitk(1, 71, 132) == 8                        # capped at 8: splits of 9, the last 8
    assert ops.ws_big_splitk(1, 64 * 7 + 1, 132) == 8
    monkeypatch.setenv("MOSAIC_WS_BIG_SPLITK", "1")
    assert ops.wgmma_tile(128, 4096, 4096, 132) == (128, 3, 1)
    assert ops.wgmma_tile(128, 4096, 14336, 132) is None             # unsplit: 32 CTAs, long K -> tiled split-K
    monkeypatch.setenv("MOSAIC_WS_BIG_SPLITK", "3")
    assert ops.wgmma_tile(128, 4096, 4096, 132) == (128, 3, 3)
    assert ops.ws_big_splitk(1, 2, 132) == 2                         # a fixed count, capped by the k-tiles
    for bad in ("9", "0", "x"):
        monkeypatch.setenv("MOSAIC_WS_BIG_SPLITK", bad)
        with pytest.raises(ValueError, match="MOSAIC_WS_BIG_SPLITK"):
            ops.wgmma_tile(128, 4096, 4096, 132)


@gpu
@needs_native
@needs_sm90
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_wgmma_real_shapes_and_routing(dtype, monkeypatch):
    """LLaMA-3 shapes at M = 4096 and 300 (the raster's partial last group); the measured tile rule and
    default routing (a tile that keeps the SMs busy, M >= 64), the tiled kernel otherwise; the opt-in small
    warp-specialized tiles ($MOSAIC_WS_SMALL_MAX_M)."""
    from mosaic_exp.kernels import ops

    _run_case(4096, 4096, 14336, 128, False, 0.03, (128, 128), dtype, variants=("zipper",), path="wgmma")
    _run_case(300, 6144, 4096, 128, False, 0.1, (64, 64), dtype, path="wgmma")
    # the rule is a pure function of the SM count: H100 SXM (132 SMs), LLaMA-3 shapes (N, K)
    assert ops.wgmma_tile(4096, 4096, 4096, 132) == (256, 3, 1)      # warp-specialized, 3.9 waves
    assert ops.wgmma_tile(1024, 4096, 4096, 132) == (256, 3, 1)      # 128 CTAs
    assert ops.wgmma_tile(512, 4096, 4096, 132) == (128, 3, 1)       # 64 CTAs of bt 256: too few
    assert ops.wgmma_tile(128, 28672, 4096, 132) == (128, 3, 1)      # bt 256 from M > 128 only
    assert ops.wgmma_tile(256, 4096, 4096, 132) == (128, 3, 2)       # 64 CTAs x 2 K splits (test_ws_big_split_rule)
    assert ops.wgmma_tile(64, 28672, 4096, 132) == (64, 2, 1)        # small warp-specialized tiles off by default
    assert ops.wgmma_tile(63, 28672, 4096, 132) is None               # below 64: the tiled kernel
    # opted in ($MOSAIC_WS_SMALL_MAX_M): the small warp-specialized tiles, K split until the grid fills 0.6 x
    # the CTA slots
    monkeypatch.setenv("MOSAIC_WS_SMALL_MAX_M", "64")
    assert ops.wgmma_tile(64, 28672, 4096, 132) == (64, 3, 1)       # 224 CTAs >= 0.6 x 264
    assert ops.wgmma_tile(1, 4096, 4096, 132) == (8, 3, 8)          # 32 n-tile pairs x 8 splits of 8 k-tiles
    assert ops.wgmma_tile(16, 4096, 14336, 132) == (16, 3, 8)
    assert ops.wgmma_tile(1, 28672, 4096, 132) == (8, 3, 1)         # 224 >= 0.6 x 264
    assert ops.wgmma_tile(33, 6144, 4096, 132) == (64, 3, 4)        # 48 x 4 = 192 >= 158
    assert ops.wgmma_tile(2, 128, 256, 132) == (8, 3, 1)            # 4 k-tiles: no split below 8 per split
    assert ops.wgmma_tile(64, 4096, 4096, 132, force=(64, 2, 8)) == (64, 2, 8)
    with pytest.raises(ValueError, match="splitk"):
        ops.wgmma_tile(4096, 4096, 4096, 132, force=(128, 4, 9))
    assert ops.wgmma_tile(4096, 4096, 4096, 132, force=(256, 3, 2)) == (256, 3, 2)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    n = 128 * sms  # (128, 2) tiles: sms CTAs per 128 tokens
    qd = pack_quantized(random_quantized(n, 512, 128, False, 0.1), dtype, "cuda")
    ops.launch(torch.randn(128, 512, device="cuda", dtype=dtype), qd, "zipper")
    assert ops.LAST_LAUNCH["kernels"][0].startswith("wgmma-zipper[bt128,wgs3,splitk1]")
    monkeypatch.setenv("MOSAIC_GEMV_MAX_M", "0")  # M=5 would take the gemv kernel first
    ops.launch(torch.randn(5, 512, device="cuda", dtype=dtype), qd, "zipper")
    assert ops.LAST_LAUNCH["kernels"][0].startswith("wgmma-zipper[bt8,wgs3,")
    monkeypatch.delenv("MOSAIC_GEMV_MAX_M")
    ops.launch(torch.randn(64, 512, device="cuda", dtype=dtype), qd, "separate")
    assert ops.LAST_LAUNCH["kernels"][0].startswith("wgmma-dense[bt64,wgs3") and ops.LAST_LAUNCH["kernels"][1].startswith("residual")
    monkeypatch.delenv("MOSAIC_WS_SMALL_MAX_M")  # the default: M = 64 on the classic kernel, below it tiled
    ops.launch(torch.randn(64, 512, device="cuda", dtype=dtype), qd, "zipper")
    assert ops.LAST_LAUNCH["kernels"][0].startswith("wgmma-zipper[bt64,wgs2")
    ops.launch(torch.randn(63, 512, device="cuda", dtype=dtype), qd, "zipper")
    assert ops.LAST_LAUNCH["kernels"][0].startswith("zipper[")
    small = pack_quantized(random_quantized(512, 512, 128, False, 0.1), dtype, "cuda")
    ops.launch(torch.randn(256, 512, device="cuda", dtype=dtype), small, "zipper")  # 4 n-tiles: too few CTAs
    assert ops.LAST_LAUNCH["kernels"][0].startswith("zipper[")
    monkeypatch.setenv("MOSAIC_WGMMA_MIN_M", "0")  # off
    ops.launch(torch.randn(128, 512, device="cuda", dtype=dtype), qd, "zipper")
    assert ops.LAST_LAUNCH["kernels"][0].startswith("zipper[")


@gpu
@needs_native
def test_large_real_shape_m4096():
    _run_case(4096, 4096, 14336, 128, False, 0.03, (128, 128), torch.bfloat16, variants=("zipper",))


@gpu
@needs_native
def test_repeated_launch_deterministic():
    """Split-K counters self-reset, the cross-warp sums have a fixed order: the same launch twice gives
    bit-identical results (tiled and small-M kernels)."""
    from mosaic_exp.kernels import ops

    qw = random_quantized(4096, 4096, 128, False, 0.1)
    p = pack_quantized(qw, torch.float16, "cuda")
    x = torch.randn(5, 4096, device="cuda", dtype=torch.float16)
    paths = (("tiled", None), ("gemv", (16, 4, 2))) + ((("wgmma", (64, 2, 4)), ("wgmma", (8, 3, 8))) if IS_SM90 else ())
    for path, plan in paths:  # gemv: cross-warp and cross-CTA sums; wgmma: cluster split-K sums
        kw = dict(wgmma=plan) if path == "wgmma" else dict(gemv=plan)
        y1 = ops.launch(x, p, "zipper", path=path, **kw).clone()
        kern = ops.LAST_LAUNCH["kernels"][0]
        assert ("splitk1]" not in kern if path == "tiled" else "kparts4,splitk2" in kern if path == "gemv"
                else kern.startswith("wgmma-")), kern
        for _ in range(3):
            y2 = ops.launch(x, p, "zipper", path=path, **kw)
            assert torch.equal(y1, y2)


@gpu
@needs_native
@pytest.mark.parametrize("mode,rslots", [(0, 1), (1, 2), (1, 6)])
def test_cluster_plan_fits_one_wave(mode, rslots):
    """With the cluster fix-up the planner keeps every cluster resident at once (occupancy API)."""
    from mosaic_exp.kernels import ops

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for n in (4096, 6144, 28672):
        pl = ops.plan(1, n, 4096, mode, sms, rslots=rslots, cluster=True)
        assert pl.splitk == 1 or pl.mtiles * pl.nctas <= ops.max_active_clusters(pl.cfg, mode, pl.splitk, rslots)
    assert ops.max_active_clusters(4, 0, 8, 1) >= 16


@gpu
@needs_native
@pytest.mark.parametrize("variant", ["dense", "separate", "zipper"])
@pytest.mark.parametrize("m", [1, 16, 70])
def test_pdl_chain_eager_and_graph(variant, m):
    """Programmatic dependent launch: each kernel reads its weights before griddepcontrol.wait and X
    after it. A chain where every launch consumes the previous launch's output as X (our kernel right
    after our kernel, and after a torch kernel), eager and replayed as a CUDA graph, must give
    bit-identical results with and without PDL, and match the reference."""
    from mosaic_exp.kernels import ops

    k = 1024
    qws = [random_quantized(k, k, 128, False, 0.1, (64, 64), seed=11 + i) for i in range(3)]
    ps = [pack_quantized(q, torch.bfloat16, "cuda") for q in qws]
    x0 = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)

    def chain(pdl):
        h = x0
        for i, p in enumerate(ps):
            h = ops.launch(h, p, variant, pdl=pdl)
            if i == 1:
                h = h * 0.5  # a torch kernel in between
            h = h * (1.0 / 8.0)  # keep magnitudes bounded along the chain
        return h

    y_pdl, y_ref = chain("early"), chain(False)
    torch.cuda.synchronize()
    assert torch.equal(y_pdl, y_ref)
    assert torch.equal(chain("late"), y_ref)
    ref = x0.double()
    for i, q in enumerate(qws):
        w = dequantize_like_kernel(_base_only(q) if variant == "dense" else q, torch.bfloat16).cuda().double()
        ref = (ref.to(torch.bfloat16).double() @ w.t())
        ref = ref.to(torch.bfloat16).double() * (0.5 if i == 1 else 1.0)
        ref = ref.to(torch.bfloat16).double() * (1.0 / 8.0)
    rel = float((y_pdl.double() - ref).norm() / ref.norm())
    assert rel < 2e-2, f"chain vs reference: {rel:.2e}"
    # the same chain as a CUDA graph (programmatic edges between consecutive kernel nodes)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        chain("early")
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y_g = chain("early")
    for _ in range(3):
        y_g.fill_(float("nan"))
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(y_g, y_ref)


@gpu
@needs_native
@pytest.mark.parametrize("variant", ["dense", "separate", "zipper"])
def test_quantlinear_gpu_and_compile(variant):
    qw = random_quantized(576, 1536, 128, False, 0.0 if variant == "dense" else 0.1)
    bias = torch.randn(576)
    m = QuantLinear.from_quantized(qw, bias, variant, torch.bfloat16)
    x = torch.randn(3, 4, 1536, device="cuda", dtype=torch.bfloat16)
    y = m(x)
    assert m.last_kernel == variant and m.kernel_name == variant
    ref = reference_gemm(x.reshape(12, 1536), qw, weight=dequantize_like_kernel(qw, torch.bfloat16)) + bias.double().cuda()
    _check(y.reshape(12, 576), ref, torch.bfloat16, f"QuantLinear {variant}")
    f = torch.compile(m, fullgraph=True)
    torch.testing.assert_close(f(x), y, rtol=0, atol=0)


@gpu
@needs_native
def test_dense_refuses_residual_and_bad_inputs():
    qw = random_quantized(256, 256, 64, False, 0.5)
    with pytest.raises(VariantUnavailable, match="dense"):
        QuantLinear.from_quantized(qw, None, "dense", torch.float16)
    m = QuantLinear.from_quantized(qw, None, "zipper", torch.float16)
    with pytest.raises(ValueError, match=r"m=4, n=256, k=256"):
        m(torch.randn(4, 200, device="cuda", dtype=torch.float16))
    with pytest.raises(TypeError, match=r"m=4, n=256, k=256"):
        m(torch.randn(4, 256, device="cuda", dtype=torch.bfloat16))
    nat = __import__("mosaic_exp.kernels.native", fromlist=["load_native"]).load_native()
    with pytest.raises(ValueError, match=r"m=4, n=256, k=250"):
        nat.gemm(16, 16, 16, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 1, 4, 256, 250, 256, 256, 1, 1, 4, 0, 0, 0, 0)


@gpu
@needs_native
def test_sanitizer_subset():
    """Small cases of every variant/config for compute-sanitizer memcheck (scripts/device_kernels.sh)."""
    from mosaic_exp.kernels import ops

    for m in (1, 33, 130):
        for (n, k, bs) in ((130, 104, (64, 64)), (576, 576, (128, 128))):
            _run_case(m, n, k, 64, False, 0.5, bs, torch.float16)
            _run_case(m, n, k, -1, True, 1.0, bs, torch.bfloat16)
    _run_case(5, 384, 1408, 128, False, 0.2, (64, 64), torch.bfloat16, splitk=5)
    _run_case(5, 384, 1408, 128, False, 0.2, (64, 64), torch.bfloat16, splitk=5, fixup="global", pdl=False)
    _run_case(3, 384, 64 * 48, 128, False, 0.1, (64, 64), torch.float16, splitk=16, fixup="cluster")
    for zp in ("first",):
        _run_case(5, 256, 64 * 70, 128, False, 0.5, (64, 64), torch.bfloat16, variants=("zipper",), splitk=2,
                  zprologue=zp)
    if ops.balanced_splitk_built():  # balanced split-K ranges (NOTES.md v22, the default) under memcheck
        _run_case(9, 448, 64 * 40 + 24, 64, False, 0.1, (128, 128), torch.float16, variants=("zipper",), cfg=4,
                  splitk=5, fixup="global", balance=True, path="tiled", seed=0)
    _run_case(9, 448, 64 * 40 + 24, 64, False, 0.1, (128, 128), torch.float16, variants=("zipper",), cfg=4,
              splitk=5, fixup="cluster", balance=False, path="tiled", seed=0)  # the uniform ranges
    for cfg, m in ((8, 40), (9, 20), (10, 40), (11, 12), (12, 20)):  # 8-warp and bounded tiles: both fix-ups, ragged N / K
        _run_case(m, 400, 64 * 5 + 24, 64, False, 0.5, (64, 64), torch.float16, cfg=cfg, splitk=3, fixup="cluster")
        _run_case(m, 130, 104 * 4, -1, True, 1.0, (64, 64), torch.bfloat16, cfg=cfg, splitk=2, fixup="global")
    for m, plan in ((1, (8, 8, 1)), (9, (16, 4, 3)), (16, (8, 1, 2)), (5, (4, 2, 3)), (17, (16, 2, 2)),
                    (32, (8, 1, 2)), (72, (16, 8, 1))):  # small-M kernel (8/16/32-row blocks), ragged N/K, dense residual
        _run_case(m, 400, 64 * 5 + 24, 64, False, 0.5, (64, 64), torch.float16, path="gemv", gemv=plan)
        _run_case(m, 130, 104, -1, True, 1.0, (64, 64), torch.bfloat16, path="gemv", gemv=plan)
    if IS_SM90:  # large-M kernel: partial token tiles, ragged N/K, dense residual
        for m, tile in ((3, (64, 2, 2)), (130, (128, 4, 1)), (70, (64, 4, 2)), (300, (256, 3, 1)), (130, (128, 3, 1)),
                        (300, (256, 3, 2)), (130, (128, 3, 3)),
                        (3, (8, 3, 2)), (20, (16, 3, 2)), (40, (32, 3, 1)), (70, (64, 3, 2))):
            _run_case(m, 400, 64 * 5 + 24, 64, False, 0.5, (64, 64), torch.float16, path="wgmma", wgmma=tile)
            small_k = tile[:2] + (min(tile[2], 2),)  # K = 104 pads to 2 k-tiles: at most 2 splits
            _run_case(m, 130, 104, -1, True, 1.0, (64, 64), torch.bfloat16, path="wgmma", wgmma=small_k)
        # a split grid past one wave (96 tiles x 2 splits; with the cluster fix-up, clusters in several waves)
        _run_case(1000, 1536, 576, 128, False, 0.1, (128, 128), torch.bfloat16, path="wgmma", wgmma=(128, 3, 2))


if os.environ.get("MOSAIC_KERNEL_TESTS_VERBOSE"):
    print(available_variants())
