"""QuantizedWeight built by build_quantized_weight: save/load, dequantize, bits_per_weight."""

import math

import pytest
import torch

from mosaic_exp.formats import QuantizedWeight, load_quantized, save_quantized
from mosaic_exp.quant.quantizer import dequantize_weight, num_groups
from mosaic_exp.quant.rtn import rtn_quantize
from mosaic_exp.residual.build import build_quantized_weight
from mosaic_exp.residual.quantize import quantize_residual
from mosaic_exp.residual.select import topk_per_layer


def make(seed, n, k, bits=4, group_size=32, symmetric=True, bs=(16, 16), gran="row", budget=0.4):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(n, k, generator=g)
    codes, scales, zeros = rtn_quantize(W, bits, group_size, symmetric)
    Q = dequantize_weight(codes, scales, zeros, group_size)
    rc, rs, _QR = quantize_residual(W - Q, bs, gran)
    mask = topk_per_layer(torch.rand(rc.shape[:2], generator=g), budget)
    qw = build_quantized_weight(codes, scales, zeros, bits, group_size, symmetric, rc, rs, mask, bs,
                                meta={"seed": seed})
    return W, codes, scales, zeros, rc, rs, mask, qw


CASES = [  # (n, k, bits, group_size, symmetric, block_shape, granularity)
    (48, 64, 4, 32, True, (16, 16), "row"),
    (37, 45, 4, 16, False, (16, 16), "row"),     # edges everywhere, odd K (packing pads a nibble)
    (40, 50, 4, -1, True, (8, 7), "block"),      # odd block width
    (33, 200, 3, 128, True, (32, 64), "row"),    # 3-bit base stored unpacked, last group of 72
    (20, 30, 8, -1, False, (20, 1), "block"),    # channel blocks
]


@pytest.mark.parametrize("case", CASES)
def test_dequantize_equals_independent_scatter(case):
    n, k, bits, gs, sym, bs, gran = case
    _W, codes, scales, zeros, rc, rs, mask, qw = make(1, n, k, bits, gs, sym, bs, gran)
    assert qw.num_residual_blocks == int(mask.sum()) > 0
    idx = qw.res_index.tolist()
    assert idx == sorted(idx) and idx == mask.nonzero().tolist()  # row-major
    expect = dequantize_weight(codes, scales, zeros, gs).clone()
    bh, bw = bs
    for (r, c) in idx:  # scatter each kept block by hand
        for i in range(bh):
            for j in range(bw):
                row, col = r * bh + i, c * bw + j
                if row < n and col < k:
                    s = rs[r, c, i if gran == "row" else 0]
                    expect[row, col] += (int(rc[r, c, i, j]) - 8) * s
    assert torch.allclose(qw.dequantize(), expect, rtol=0, atol=1e-6)  # same float32 terms, order aside
    assert torch.equal(qw.base_codes(), codes)


@pytest.mark.parametrize("case", CASES)
def test_save_load_bit_exact(case, tmp_path):
    n, k, bits, gs, sym, bs, gran = case
    *_, qw = make(2, n, k, bits, gs, sym, bs, gran)
    *_, qw_empty = make(3, n, k, bits, gs, sym, bs, gran, budget=0.0)
    assert qw_empty.num_residual_blocks == 0
    save_quantized({"layers.0.q_proj": qw, "layers.0.k_proj": qw_empty}, tmp_path / "model")
    back = load_quantized(tmp_path / "model")
    for name, ref in (("layers.0.q_proj", qw), ("layers.0.k_proj", qw_empty)):
        got = back[name]
        for t in QuantizedWeight._TENSORS:
            a, b = getattr(ref, t), getattr(got, t)
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (name, t)
        assert got.block_shape == ref.block_shape and got.group_size == ref.group_size
        assert got.meta == ref.meta
        assert torch.equal(got.dequantize(), ref.dequantize())


@pytest.mark.parametrize("case", CASES)
def test_bits_per_weight(case):
    n, k, bits, gs, sym, bs, gran = case
    *_, qw = make(4, n, k, bits, gs, sym, bs, gran)
    g = num_groups(k, gs)
    nb = qw.num_residual_blocks
    bh, bw = bs
    n_res_scales = nb * (bh if gran == "row" else 1)
    total = n * k * bits + n * g * 16 + (0 if sym else n * g * bits)  # codes + fp16 scales (+ zeros)
    total += nb * bh * bw * 4 + nb * 2 * 32 + n_res_scales * 16     # residual codes + index + scales
    assert qw.bits_per_weight() == pytest.approx(total / (n * k), rel=1e-12)
    assert qw.residual_fraction == pytest.approx(nb / (math.ceil(n / bh) * math.ceil(k / bw)))


def test_build_validation():
    _W, codes, scales, zeros, rc, rs, mask, _qw = make(5, 32, 32)
    with pytest.raises(ValueError):
        build_quantized_weight(codes, scales, zeros, 4, 32, True, None, None, mask, (16, 16))
    with pytest.raises(ValueError):
        build_quantized_weight(codes, scales, zeros, 4, 32, True, rc, rs, mask, (8, 8))
    empty = build_quantized_weight(codes, scales, zeros, 4, 32, True, rc, rs,
                                   torch.zeros_like(mask), (16, 16))
    assert empty.num_residual_blocks == 0 and empty.bits_per_weight() == pytest.approx(4 + 16 / 32)


def test_fp16_scales_roundtrip(tmp_path):
    g = torch.Generator().manual_seed(6)
    W = torch.randn(24, 40, generator=g)
    codes, scales, zeros = rtn_quantize(W, 4, 16, False)
    rc, rs, _ = quantize_residual(W - dequantize_weight(codes, scales, zeros, 16), (8, 16), "row")
    mask = topk_per_layer(torch.rand(rc.shape[:2], generator=g), 0.5)
    qw = build_quantized_weight(codes, scales, zeros, 4, 16, False, rc, rs, mask, (8, 16),
                                scale_dtype=torch.float16)
    assert qw.base_scales.dtype == qw.res_scales.dtype == torch.float16
    ref = build_quantized_weight(codes, scales, zeros, 4, 16, False, rc, rs, mask, (8, 16))
    # fp16 scales: relative rounding 2^-11 per scale, so the weights agree to ~1e-3 relative
    assert torch.allclose(qw.dequantize(), ref.dequantize(), rtol=2e-3, atol=1e-5)
    save_quantized({"l": qw}, tmp_path / "m")
    back = load_quantized(tmp_path / "m")["l"]
    assert back.res_scales.dtype == torch.float16 and torch.equal(back.dequantize(), qw.dequantize())
