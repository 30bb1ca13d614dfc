"""Per-token activation fake quantization."""

import pytest
import torch
from torch import nn

from mosaic_exp.quant.act import (
    ActQuantizer,
    act_quant_pre_hook,
    activation_scale,
    fake_quantize_activation,
    register_act_quant,
)


def sample(seed, shape=(3, 17, 64)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * torch.logspace(-2, 1, shape[-1])
    x[0, 0] = 0.0  # an all-zero token
    return x


@pytest.mark.parametrize("bits", [4, 8, 3, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_error_bound_and_grid(bits, seed):
    x = sample(seed)
    xq = fake_quantize_activation(x, bits)
    s = activation_scale(x, bits)
    qmax = 2 ** (bits - 1) - 1
    # No clipping at clip_ratio 1, so round-to-nearest error <= s/2; slack 1e-6*s covers the
    # float32 rounding of x/s and q*s (a wrong scale or rounding would exceed s/2 by O(s)).
    assert ((xq - x).abs() <= s / 2 * (1 + 1e-6)).all()
    q = xq / s
    assert torch.allclose(q, q.round(), atol=1e-4)  # on the grid
    assert q.round().abs().max() <= qmax + 1e-4  # absmax maps to +-qmax
    assert torch.equal(xq[0, 0], torch.zeros(64))
    # the largest |x| of each token is represented exactly (it defines the scale)
    idx = x.abs().argmax(-1, keepdim=True)
    assert torch.allclose(xq.gather(-1, idx), x.gather(-1, idx), rtol=1e-6, atol=0)
    levels = torch.unique(q.round()[1, 3])
    assert levels.numel() <= 2**bits


def test_16_bits_identity_and_validation():
    x = sample(2)
    assert fake_quantize_activation(x, 16) is x
    for bad in (1, 17, 0, 4.0):
        with pytest.raises(ValueError):
            fake_quantize_activation(x, bad)
    with pytest.raises(ValueError):
        fake_quantize_activation(x, 8, clip_ratio=0.0)


def test_clipping_and_dtype():
    x = sample(3).to(torch.bfloat16)
    y = fake_quantize_activation(x, 4, clip_ratio=0.9)
    assert y.dtype == torch.bfloat16
    s = activation_scale(x, 4, 0.9)
    # codes are clamped to [-8, 7]: y in [-8s, 7s] (1e-2 slack: bf16 output has 8 mantissa bits)
    yf = y.float()
    assert (yf <= 7 * s * (1 + 1e-2)).all() and (yf >= -8 * s * (1 + 1e-2)).all()
    assert (yf >= 7 * s * (1 - 1e-2)).any()  # some values really were clipped to the top level


def test_error_shrinks_with_bits():
    x = sample(4)
    errs = [float((fake_quantize_activation(x, b) - x).norm()) for b in (4, 6, 8)]
    assert errs[0] > errs[1] > errs[2]


def test_pre_hook_and_module():
    lin = nn.Linear(64, 8)
    x = sample(5)
    ref = lin(fake_quantize_activation(x, 4))
    h = register_act_quant(lin, 4)
    assert torch.equal(lin(x), ref)
    h.remove()
    assert torch.equal(lin(x), nn.functional.linear(x, lin.weight, lin.bias))
    assert register_act_quant(lin, 16) is None
    assert torch.equal(ActQuantizer(4)(x), fake_quantize_activation(x, 4))
    hook = act_quant_pre_hook(8)
    (xq,) = hook(lin, (x,))
    assert torch.equal(xq, fake_quantize_activation(x, 8))
