"""ZipperQuant: the bit split, the BitSplitWeight container, the CPU high-bits kernel and BitSplitLinear,
each against a direct reference on fresh random inputs (odd shapes, per-channel and non-power-of-two groups)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mosaic_exp.formats import BitSplitWeight, load_quantized, save_quantized
from mosaic_exp.quant.act import fake_quantize_activation
from mosaic_exp.quant.zipperquant import group_scales, split_codes, zipperquant_quantize

U32 = 2.0 ** -24  # float32 unit roundoff


@pytest.fixture(scope="module")
def cpu_lut():
    from mosaic_exp.kernels.cpu_lut import CpuKernelUnavailable, build_cpu_lut, load_cpu_lut

    try:
        build_cpu_lut(quiet=True)
        return load_cpu_lut()
    except CpuKernelUnavailable as e:
        if "not found" in str(e):  # no C++ compiler on this machine; CI has one
            pytest.skip(str(e))
        raise


def _outlier_weight(n, k, seed, outlier_cols=3, gain=25.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    cols = torch.randperm(k, generator=g)[:outlier_cols]
    w[:, cols] *= gain  # what smoothing does: a few columns carry the activation outliers
    return w


def test_split_codes_is_exact_and_sparse_only_outside_the_low_range():
    v = torch.arange(-32, 32)
    lo, hi = split_codes(v, 4)
    assert torch.equal(lo + 16 * hi, v.to(torch.int32))
    assert int(lo.min()) == -8 and int(lo.max()) == 7
    assert set(hi.tolist()) == {-2, -1, 0, 1, 2}  # 24..31 = (v - 32) + 16 * 2
    assert torch.equal(hi == 0, (v >= -8) & (v <= 7))


@pytest.mark.parametrize("n,k,gs", [(1, 64, 64), (37, 300, 128), (64, 257, -1), (48, 200, 96)])
def test_absmax_rule_is_the_6bit_symmetric_grid(n, k, gs):
    """absmax: W_q = s * clamp(round(W / s)) with s = absmax / 31 per group (stored fp16), split losslessly."""
    W = _outlier_weight(n, k, seed=n + k)
    bsw, info = zipperquant_quantize(W, bits=6, group_size=gs, scale_rule="absmax")
    g = k if gs == -1 else gs
    s = torch.stack([W[:, j:j + g].abs().amax(1) for j in range(0, k, g)], 1) / 31
    s_col = s.half().float().repeat_interleave(g, 1)[:, :k]
    ref = s_col * torch.clamp(torch.round(W / s_col), -32, 31)
    torch.testing.assert_close(bsw.dequantize(), ref, rtol=0, atol=0)
    # the dense part alone is the 4-bit low-order field of the same codes
    v = torch.round(ref / s_col)
    lo, hi = split_codes(v, 4)
    torch.testing.assert_close(bsw.low.dequantize(), s_col * lo, rtol=0, atol=0)
    assert bsw.high_nnz == int((hi != 0).sum()) == info["high_nnz"]
    assert info["weight_err"] <= info["weight_err_low_only"]


@pytest.mark.parametrize("rho", [0.01, 0.05])
def test_inlier_rule_bounds_density_and_error(rho):
    n, k, gs = 96, 384, 128
    W = torch.randn(n, k, generator=torch.Generator().manual_seed(7))  # no outliers: the absmax rule is dense here
    dense, _ = zipperquant_quantize(W, group_size=gs, scale_rule="absmax")
    bsw, _ = zipperquant_quantize(W, group_size=gs, scale_rule="inlier", outlier_fraction=rho)
    assert dense.high_density > 0.2
    assert bsw.high_density <= rho + 1.0 / gs  # the quantile leaves at most ~rho of a group above the low range
    # nothing is clipped: every weight within half a step of its code
    s_col = bsw.low.base_scales.float().repeat_interleave(gs, 1)
    assert bool(((W - bsw.dequantize()).abs() <= s_col / 2 * (1 + 1e-6)).all())


def test_quantize_rejects_bad_arguments():
    W = torch.randn(8, 64)
    with pytest.raises(ValueError, match="low_bits"):
        zipperquant_quantize(W, bits=4, low_bits=4)
    with pytest.raises(ValueError, match="scale_rule"):
        zipperquant_quantize(W, scale_rule="median")
    with pytest.raises(ValueError, match="outlier_fraction"):
        zipperquant_quantize(W, scale_rule="inlier", outlier_fraction=0.0)


def test_bitsplit_weight_validates_and_round_trips(tmp_path):
    bsw, _ = zipperquant_quantize(_outlier_weight(33, 200, seed=3), group_size=64)
    path = tmp_path / "q"
    save_quantized({"layer.0": bsw}, path)
    back = load_quantized(path)["layer.0"]
    assert isinstance(back, BitSplitWeight)
    torch.testing.assert_close(back.dequantize(), bsw.dequantize(), rtol=0, atol=0)
    desc = json.loads(path.with_suffix(".json").read_text())["layers"]["layer.0"]
    assert desc["kind"] == "bitsplit" and desc["high_nnz"] == bsw.high_nnz
    # storage: the 4-bit low part + per nonzero 3 code bits (-2..2) and a 32-bit column index + row pointers
    expect = bsw.low.bits_per_weight() + (bsw.high_nnz * 35 + 34 * 32) / (33 * 200)
    assert math.isclose(bsw.bits_per_weight(), expect)
    with pytest.raises(ValueError, match="high_indptr"):
        BitSplitWeight(low=bsw.low, bits=6, high_indptr=bsw.high_indptr[:-1], high_indices=bsw.high_indices,
                       high_codes=bsw.high_codes)
    with pytest.raises(ValueError, match="high_codes must be nonzero"):
        BitSplitWeight(low=bsw.low, bits=6, high_indptr=bsw.high_indptr, high_indices=bsw.high_indices,
                       high_codes=torch.full_like(bsw.high_codes, 3))
    with pytest.raises(ValueError, match="int8"):
        BitSplitWeight(low=bsw.low, bits=6, high_indptr=bsw.high_indptr, high_indices=bsw.high_indices,
                       high_codes=bsw.high_codes.to(torch.int32))


def _check_high(y, x, bsw):
    """The kernel against float64: each output sums its row's nonzeros in float32 (recursive summation, plus
    one product rounding each), so |err| <= (nnz_row + 2) u sum |x W_hi| per output."""
    from mosaic_exp.kernels.cpu_lut import high_bits_reference

    ref = high_bits_reference(x, bsw)
    W_hi = bsw.high_dense().double()
    nnz_row = (bsw.high_indptr[1:] - bsw.high_indptr[:-1]).double()
    bound = (nnz_row + 2) * U32 * (x.double().abs() @ W_hi.abs().T) + 1e-30
    err = (y.double() - ref).abs()
    assert bool((err <= bound).all()), float((err / bound).max())


@pytest.mark.parametrize("lut", [True, False])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 16, 17, 33])
@pytest.mark.parametrize("n,k,gs", [(37, 300, 128), (64, 257, -1), (48, 200, 96), (1, 64, 64)])
def test_cpu_kernel_matches_reference(cpu_lut, m, n, k, gs, lut):
    from mosaic_exp.kernels.cpu_lut import PackedHigh, high_bits_mm

    bsw, _ = zipperquant_quantize(_outlier_weight(n, k, seed=m * 31 + n), group_size=gs, scale_rule="inlier",
                                  outlier_fraction=0.05)
    assert bsw.high_nnz > 0
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m + k)) * 3
    y = high_bits_mm(x, PackedHigh.from_weight(bsw), lut=lut)
    assert y.dtype == torch.float32 and y.shape == (m, n)
    _check_high(y, x, bsw)


def test_cpu_kernel_edges(cpu_lut):
    from mosaic_exp.kernels.cpu_lut import PackedHigh, high_bits_mm

    # a weight with no high-order bits at all, and bf16 / 3-D activations
    W = torch.randn(20, 128, generator=torch.Generator().manual_seed(1)) * 1e-3
    bsw, _ = zipperquant_quantize(W, group_size=64, scale_rule="inlier", outlier_fraction=0.5)
    p = PackedHigh.from_weight(bsw)
    if bsw.high_nnz == 0:
        assert torch.equal(high_bits_mm(torch.randn(3, 128), p), torch.zeros(3, 20))
    bsw, _ = zipperquant_quantize(_outlier_weight(20, 128, seed=2), group_size=64)
    x = torch.randn(2, 3, 128).bfloat16()
    y = high_bits_mm(x, PackedHigh.from_weight(bsw))
    assert y.shape == (2, 3, 20)
    _check_high(y.reshape(6, 20), x.reshape(6, 128).float(), bsw)


def test_cpu_kernel_errors_name_the_shapes(cpu_lut):
    from mosaic_exp.kernels.cpu_lut import PackedHigh, high_bits_mm

    bsw, _ = zipperquant_quantize(_outlier_weight(16, 128, seed=4), group_size=64)
    p = PackedHigh.from_weight(bsw)
    with pytest.raises(ValueError, match="k=100.*k=128"):
        high_bits_mm(torch.randn(2, 100), p)
    with pytest.raises(ValueError, match=r"scales must be contiguous float32 \[N, G\] = \[16, 2\].*m=2, n=16, k=128"):
        cpu_lut.high_bits_mm(torch.randn(2, 128), p.indptr, p.indices, p.codes, p.scales[:, :1].contiguous(),
                             p.group_size, 4, 2, True)


def test_cpu_kernel_op_is_registered_with_a_fake(cpu_lut):
    from mosaic_exp.kernels.cpu_lut import PackedHigh, _high_bits_mm_op

    bsw, _ = zipperquant_quantize(_outlier_weight(16, 128, seed=5), group_size=64)
    p = PackedHigh.from_weight(bsw)
    torch.library.opcheck(_high_bits_mm_op, (torch.randn(3, 128), p.indptr, p.indices, p.codes, p.scales,
                                             p.group_size, 4, 2, True))


@pytest.mark.parametrize("high_kernel", ["reference", "cpu_lut", "cpu_direct"])
@pytest.mark.parametrize("a_bits", [16, 4])
def test_bitsplit_linear_computes_both_halves(cpu_lut, high_kernel, a_bits):
    """y = Q_a(x) W_lo^T + x W_hi^T + b: the dense part sees quantized activations, the sparse part does not."""
    from mosaic_exp.kernels.bitsplit_linear import BitSplitLinear

    n, k = 40, 192
    bsw, _ = zipperquant_quantize(_outlier_weight(n, k, seed=6), group_size=64, scale_rule="inlier",
                                  outlier_fraction=0.05)
    bias = torch.randn(n)
    mod = BitSplitLinear(bsw, bias=bias, a_bits=a_bits, high_kernel=high_kernel)
    x = torch.randn(2, 7, k, generator=torch.Generator().manual_seed(8))
    y = mod(x)
    xd = x.double()
    ref = (fake_quantize_activation(x, a_bits).double() @ bsw.low.dequantize().double().T
           + xd @ bsw.high_dense().double().T + bias.double())
    # float32 products of length K, twice: the dense bound 2 K u sum |x||W|
    mag = xd.abs() @ bsw.dequantize().double().abs().T + bias.double().abs()
    assert bool(((y.double() - ref).abs() <= 2 * k * U32 * mag).all())
    if high_kernel == "reference":
        assert mod._w_ref  # the dense reference is cached ...
        mod.to("cpu")
        assert not mod._w_ref  # ... and dropped on a move, never left behind on the old device
    high_ran = mod.last_kernel.split("high:")[1]
    assert ("reference" in high_ran) == (high_kernel == "reference")
    assert ("lookup table" in high_ran) == (high_kernel == "cpu_lut")


def test_config_validation_and_hash():
    from mosaic_exp.config import ConfigError, QuantConfig, RunConfig, config_hash

    ok = QuantConfig(method="zipperquant", w_bits=6, symmetric=True, a_bits=4)
    assert ok.low_bits == 4
    for kw, what in [({"w_bits": 4}, "w_bits"), ({"symmetric": False}, "symmetric"), ({"base": "hqq"}, "base"),
                     ({"scale_rule": "median"}, "scale_rule"), ({"outlier_fraction": 1.5}, "outlier_fraction"),
                     ({"high_kernel": "gpu"}, "high_kernel"), ({"low_bits": 3}, "low_bits")]:
        args = {"method": "zipperquant", "w_bits": 6, "symmetric": True, **kw}
        with pytest.raises(ConfigError, match=what):
            QuantConfig(**args)
    # ZipperQuant's keys do not enter other methods' hashes, and do enter its own
    rtn = [RunConfig(quant=QuantConfig(method="rtn", scale_rule=r)) for r in ("absmax", "inlier")]
    assert config_hash(rtn[0]) == config_hash(rtn[1])
    zq = [RunConfig(quant=QuantConfig(method="zipperquant", w_bits=6, symmetric=True, scale_rule=r))
          for r in ("absmax", "inlier")]
    assert config_hash(zq[0]) != config_hash(zq[1])


def test_tiny_run_end_to_end(compose, tmp_path, data_dir):
    from mosaic_exp.runner.entry import run_experiment

    cfg = compose(["debug=tiny", "logger=none", "quant=zipperquant", "quant.scale_rule=inlier",
                   "quant.outlier_fraction=0.02", "save_quantized=true"], tmp_path)
    ppl = run_experiment(cfg, run_dir=str(tmp_path))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "ok" and math.isfinite(ppl)
    density = m["metrics"]["zipperquant/high_density"]
    assert 0 < density <= 0.02 + 1 / 64  # tiny model: K = 64 or 160, groups of <= 128
    assert 4.0 < m["metrics"]["bits_per_weight"] < 6.0
    assert "bit-split" in m["kernel_ran"]
    weights = load_quantized(tmp_path / "quantized")
    assert weights and all(isinstance(w, BitSplitWeight) for w in weights.values())
    layers = json.loads((tmp_path / "layers.json").read_text())
    lin = [v for v in layers.values() if "high_nnz" in v]
    assert lin and all(v["proxy_err"] <= v["proxy_err_low_only"] for v in lin)


def _gptq_with(X: torch.Tensor, W: torch.Tensor):
    from mosaic_exp.quant.gptq import GPTQ

    g = GPTQ(W)
    g.add_batch(X)
    return g


def test_gptq_on_a_given_grid_is_round_to_nearest_when_h_is_diagonal():
    """With independent input channels (diagonal H) GPTQ has no error to feed forward: its codes on a given grid
    are the round-to-nearest codes on that grid, exactly."""
    W = _outlier_weight(48, 256, seed=5)
    X = torch.diag(torch.rand(256) + 0.5)  # T = K tokens, one channel each: H = 2 X^T X / T diagonal
    s = group_scales(W, 6, 4, 128, "inlier", 0.02)
    zero = torch.full_like(s, 32.0)
    res = _gptq_with(X, W).quantize(bits=6, group_size=128, symmetric=True, qparams=(s, zero), percdamp=0.0)
    rtn = torch.clamp(torch.round(W / s.repeat_interleave(128, dim=1)) + 32, 0, 63)
    assert torch.equal(res.codes.float(), rtn) and torch.equal(res.scales, s)
    with pytest.raises(ValueError, match=r"qparams must be two \[N, G\]"):
        _gptq_with(X, W).quantize(bits=6, group_size=128, qparams=(s[:, :1], zero[:, :1]))


def test_zipperquant_gptq_base_lowers_the_output_error():
    """GPTQ on the scale rule's grid: the same split (W_lo + W_hi = s v exactly, the same scales), a lower output
    error tr(E H E^T) than round-to-nearest on correlated inputs (seeded)."""
    g = torch.Generator().manual_seed(11)
    K = 256
    mix = torch.randn(K, K, generator=g) / K ** 0.5 + torch.eye(K)
    X = torch.randn(1024, K, generator=g) @ mix  # correlated channels
    W = _outlier_weight(64, K, seed=12)
    H = 2 * X.T @ X / X.shape[0]

    def out_err(bsw):
        E = W - bsw.dequantize()
        return float(((E @ H) * E).sum())

    kw = dict(group_size=128, scale_rule="inlier", outlier_fraction=0.03)
    rtn, _ = zipperquant_quantize(W, **kw)
    gq, info = zipperquant_quantize(W, gptq=_gptq_with(X, W), gptq_options={"percdamp": 0.01}, **kw)
    assert info["base"] == "gptq" and info["gptq_fallback"] is None
    assert torch.equal(gq.low.base_scales, rtn.low.base_scales)  # the grid is the scale rule's
    v = torch.round(gq.dequantize() / gq.low.base_scales.float().repeat_interleave(128, dim=1))
    assert bool((v.abs() <= 32).all())
    assert out_err(gq) < 0.8 * out_err(rtn), (out_err(gq), out_err(rtn))


def test_group_with_gptq_equals_one_weight_at_a_time():
    """q/k/v share H: the stacked GPTQ pass gives each weight exactly its own codes, split and scales."""
    from mosaic_exp.quant.zipperquant import zipperquant_quantize_group

    g = torch.Generator().manual_seed(3)
    X = torch.randn(512, 192, generator=g) @ (torch.randn(192, 192, generator=g) / 14 + torch.eye(192))
    Ws = [_outlier_weight(n, 192, seed=20 + n) for n in (40, 16, 9)]
    kw = dict(group_size=64, scale_rule="inlier", outlier_fraction=0.05, gptq_options={"percdamp": 0.01})
    group = zipperquant_quantize_group(Ws, gptq=_gptq_with(X, Ws[0]), **kw)
    for W, (bsw, info) in zip(Ws, group):
        one, _ = zipperquant_quantize(W, gptq=_gptq_with(X, W), **kw)
        assert torch.equal(bsw.dequantize(), one.dequantize()) and torch.equal(bsw.high_codes, one.high_codes)
        assert info["gptq_stacked"] == 3


def test_tiny_run_with_gptq_base(compose, tmp_path, data_dir):
    from mosaic_exp.runner.entry import run_experiment

    cfg = compose(["debug=tiny", "logger=none", "quant=zipperquant", "quant.base=gptq", "quant.scale_rule=inlier",
                   "quant.outlier_fraction=0.02"], tmp_path)
    ppl = run_experiment(cfg, run_dir=str(tmp_path))
    assert math.isfinite(ppl)
    layers = json.loads((tmp_path / "layers.json").read_text())
    lin = [v for v in layers.values() if "high_nnz" in v]
    assert lin and all(v["base"] == "gptq" for v in lin)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("low_variant", ["reference", "dense"])
@pytest.mark.parametrize("high_kernel", ["cpu_lut", "cpu_direct", "reference"])
@pytest.mark.parametrize("m", [1, 3, 16, 33])
def test_bitsplit_linear_on_cuda_overlapped(cpu_lut, low_variant, high_kernel, m):
    """The GPU dense part and the CPU sparse part (side-stream host copy, overlapped) against float64."""
    from mosaic_exp.kernels.bitsplit_linear import BitSplitLinear
    from mosaic_exp.kernels.quant_linear import VariantUnavailable, check_variant

    if low_variant != "reference":
        try:
            check_variant(low_variant, "cuda")
        except VariantUnavailable as e:
            pytest.skip(str(e))
    n, k = 256, 512
    bsw, _ = zipperquant_quantize(_outlier_weight(n, k, seed=m), group_size=128, scale_rule="inlier",
                                  outlier_fraction=0.02)
    mod = BitSplitLinear(bsw, high_kernel=high_kernel, dtype=torch.float16, device="cuda")
    if low_variant != "reference":
        mod.use_low_variant(low_variant, torch.float16)
    x = torch.randn(m, k, device="cuda").half()
    y = mod(x)
    xd = x.double().cpu()
    ref = xd @ bsw.dequantize().double().T
    # the dense part's weights rounded to fp16 (2^-11 each, the reference low variant dequantizes to fp16),
    # fp32 accumulations of length K, the fp16 output (2^-11, doubled for the final add)
    mag = xd.abs() @ bsw.dequantize().double().abs().T
    err = (y.double().cpu() - ref).abs()
    assert bool((err <= 2 ** -10 * ref.abs() + (2 ** -11 + 4 * k * U32) * mag + 1e-6).all()), float(err.max())
    assert mod.last_kernel.startswith(f"low: {low_variant}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bitsplit_linear_overlapped_layers_back_to_back(cpu_lut):
    """Layers share one offload's pinned buffers: back-to-back forwards of layers with other shapes and M (buffers
    regrown and reused while earlier copies may still be in flight) give each call's own result, bit-exactly as a
    forward run alone after a full synchronize."""
    from mosaic_exp.kernels.bitsplit_linear import BitSplitLinear

    shapes = [(256, 512), (384, 256), (128, 640)]
    mods = []
    for i, (n, k) in enumerate(shapes):
        bsw, _ = zipperquant_quantize(_outlier_weight(n, k, seed=40 + i), group_size=128, scale_rule="inlier",
                                      outlier_fraction=0.02)
        mods.append(BitSplitLinear(bsw, high_kernel="cpu_direct", dtype=torch.float16, device="cuda"))
    g = torch.Generator(device="cuda").manual_seed(7)
    calls = [(i % 3, m) for i, m in enumerate([1, 17, 3, 64, 2, 33, 1, 5, 40])]
    xs = [torch.randn(m, shapes[j][1], device="cuda", generator=g).half() for j, m in calls]
    alone = []
    for (j, _), x in zip(calls, xs):
        alone.append(mods[j](x).clone())
        torch.cuda.synchronize()
    back_to_back = [mods[j](x) for (j, _), x in zip(calls, xs)]  # no synchronize in between
    torch.cuda.synchronize()
    for a, b in zip(alone, back_to_back):
        assert torch.equal(a, b)


def test_cpu_module_is_rebuilt_for_another_torch_or_cpu(tmp_path):
    """native/build travels to the device: a module built for another torch / CPU model / source is not used."""
    from mosaic_exp.kernels.cpu_lut import _stamp_ok, _stamp_path, build_stamp

    target = tmp_path / "_mosaic_cpu.so"
    target.write_bytes(b"")
    assert not _stamp_ok(target)  # no stamp
    _stamp_path(target).write_text(json.dumps(build_stamp()))
    assert _stamp_ok(target)
    for key, value in [("torch", "0.0"), ("cpu", "another CPU"), ("source_mtime", 0.0)]:
        _stamp_path(target).write_text(json.dumps({**build_stamp(), key: value}))
        assert not _stamp_ok(target), key
