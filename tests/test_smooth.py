"""SmoothQuant migration: outputs preserved exactly, scales do what the formula says."""

import pytest
import torch
from torch import nn

from mosaic_exp.quant.smooth import (
    apply_smoothing,
    expand_kv_scales,
    fold_into_linear,
    reduce_kv_absmax,
    smooth_scales,
)

# float64 throughout: smoothing is an exact identity, so only rounding (~1e-15 relative) remains;
# 1e-10 relative is far below any real mistake (a wrong fold changes outputs by O(1)).
TOL = {"rtol": 1e-10, "atol": 1e-10}


class RMSNorm(nn.Module):
    """Llama-style RMSNorm: weight * x / rms(x)."""

    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d, dtype=torch.float64))

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class TinyBlock(nn.Module):
    """Llama-like: norm -> q,k,v ; attention (GQA) -> o ; norm -> gate, up ; silu*up -> down."""

    def __init__(self, d=32, heads=4, kv_heads=2, ffn=48, layernorm=False, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.h, self.kvh, self.hd = heads, kv_heads, d // heads

        def lin(i, o, bias=False):
            m = nn.Linear(i, o, bias=bias, dtype=torch.float64)
            with torch.no_grad():
                m.weight.copy_(torch.randn(o, i, generator=g, dtype=torch.float64) / i**0.5)
                if bias:
                    m.bias.copy_(torch.randn(o, generator=g, dtype=torch.float64))
            return m

        def norm():
            n = nn.LayerNorm(d, dtype=torch.float64) if layernorm else RMSNorm(d)
            with torch.no_grad():
                n.weight.copy_(torch.rand(d, generator=g, dtype=torch.float64) + 0.5)
                if layernorm:
                    n.bias.copy_(torch.randn(d, generator=g, dtype=torch.float64))
            return n

        self.n1, self.n2 = norm(), norm()
        self.q, self.k, self.v = lin(d, d), lin(d, kv_heads * self.hd), lin(d, kv_heads * self.hd, bias=True)
        self.o = lin(d, d)
        self.gate, self.up, self.down = lin(d, ffn), lin(d, ffn, bias=True), lin(ffn, d)
        self.acts = {}

    def forward(self, x):
        b, t, d = x.shape
        a = self.n1(x)
        self.acts["attn_in"] = a
        q = self.q(a).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k(a).view(b, t, self.kvh, self.hd).transpose(1, 2)
        v = self.v(a).view(b, t, self.kvh, self.hd).transpose(1, 2)
        rep = self.h // self.kvh
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / self.hd**0.5, dim=-1) @ v
        att = att.transpose(1, 2).reshape(b, t, d)
        self.acts["o_in"] = att
        x = x + self.o(att)
        m = self.n2(x)
        self.acts["mlp_in"] = m
        hmid = torch.nn.functional.silu(self.gate(m)) * self.up(m)
        self.acts["down_in"] = hmid
        return x + self.down(hmid)


def absmax(t):
    return t.reshape(-1, t.shape[-1]).abs().amax(0)


@pytest.mark.parametrize("layernorm", [False, True])
@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_smoothing_preserves_block_outputs(layernorm, alpha):
    blk = TinyBlock(layernorm=layernorm, seed=int(alpha * 10))
    x = torch.randn(2, 7, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[..., 3] *= 20  # an outlier channel, so s is far from 1
    ref = blk(x)
    acts = {k: absmax(v) for k, v in blk.acts.items()}
    s1 = smooth_scales(acts["attn_in"], [blk.q.weight, blk.k.weight, blk.v.weight], alpha)
    apply_smoothing(s1, [blk.q, blk.k, blk.v], blk.n1)
    s2 = smooth_scales(acts["mlp_in"], [blk.gate.weight, blk.up.weight], alpha)
    apply_smoothing(s2, [blk.gate, blk.up], blk.n2)
    rep = blk.h // blk.kvh
    s3 = smooth_scales(reduce_kv_absmax(acts["o_in"], blk.hd, rep),
                       [blk.o.weight.abs().view(32, blk.kvh, rep, blk.hd).amax(2).reshape(32, -1)], alpha)
    fold_into_linear(s3, blk.v, [blk.o], head_dim=blk.hd, n_rep=rep)
    s4 = smooth_scales(acts["down_in"], [blk.down.weight], alpha)
    fold_into_linear(s4, blk.up, [blk.down])
    for s in (s1, s2, s3, s4):
        assert (s - 1).abs().max() > 0.1  # smoothing really changed something
    out = blk(x)
    assert torch.allclose(out, ref, **TOL), float((out - ref).abs().max())


def test_alpha_zero_is_identity():
    w = torch.randn(5, 9, dtype=torch.float64)
    s = smooth_scales(torch.rand(9, dtype=torch.float64) * 10, [w], 0.0)
    assert torch.equal(s, torch.ones(9, dtype=torch.float64))


def test_scales_balance_maxima():
    """After migration, max|X_hat_j| = max|X_j|^(1-a) max|W_j|^(1-a) and max|W_hat_j| = (max|X_j| max|W_j|)^a."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(64, 16, generator=g, dtype=torch.float64) * torch.logspace(-1, 2, 16, dtype=torch.float64)
    W1 = torch.randn(8, 16, generator=g, dtype=torch.float64)
    W2 = torch.randn(4, 16, generator=g, dtype=torch.float64) * 3
    a, alpha = absmax(X), 0.5
    s = smooth_scales(a, [W1, W2], alpha)
    w = torch.cat([W1, W2]).abs().amax(0)
    assert torch.allclose(absmax(X / s), (a * w) ** 0.5, rtol=1e-12)
    assert torch.allclose(torch.cat([W1, W2]).mul(s).abs().amax(0), (a * w) ** 0.5, rtol=1e-12)


def test_dead_channel_and_validation():
    a = torch.tensor([0.0, 1.0, 2.0])
    s = smooth_scales(a, [torch.ones(2, 3)], 0.5)
    assert torch.isfinite(s).all() and (s > 0).all()
    with pytest.raises(ValueError):
        smooth_scales(a, [torch.ones(2, 3)], 1.5)
    with pytest.raises(ValueError):
        smooth_scales(a, [torch.ones(2, 4)], 0.5)


def test_expand_reduce_kv():
    s = torch.arange(6.0)  # 2 kv heads x head_dim 3
    assert expand_kv_scales(s, 3, 2).tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5]
    a = torch.tensor([1.0, 5, 2, 4, 1, 3, 0, 0, 7, 1, 1, 1])
    assert reduce_kv_absmax(a, 3, 2).tolist() == [4, 5, 3, 1, 1, 7]
