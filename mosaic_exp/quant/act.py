"""Per-token symmetric fake quantization of activations, Q(X_hat) in the MosaicQuant layer.

For each token (row over the last dimension) with absmax a and qmax = 2^(bits-1) - 1:
    s = clip_ratio * a / qmax,   Q(x) = clamp(round(x / s), -qmax - 1, qmax) * s
(a zero row gets s = 1 and stays zero). bits = 16 means "not quantized" (identity).
With clip_ratio = 1 nothing is clipped, so |Q(x) - x| <= s / 2 elementwise.
The math runs in float32 (float64 stays float64) and returns the input dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _validate(bits: int, clip_ratio: float) -> None:
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"activation bits must be an int in 2..16, got {bits!r}")
    if not 0.0 < clip_ratio <= 1.0:
        raise ValueError(f"clip_ratio must be in (0, 1], got {clip_ratio}")


def activation_scale(x: torch.Tensor, bits: int, clip_ratio: float = 1.0) -> torch.Tensor:
    """Per-token scale [..., 1] (float32 or float64)."""
    _validate(bits, clip_ratio)
    xf = x if x.dtype == torch.float64 else x.float()
    qmax = 2 ** (bits - 1) - 1
    s = xf.abs().amax(dim=-1, keepdim=True) * clip_ratio / qmax
    return torch.where(s > 0, s, torch.ones_like(s))


def fake_quantize_activation(x: torch.Tensor, bits: int, clip_ratio: float = 1.0) -> torch.Tensor:
    """Quantize-dequantize x [..., K] per token to ``bits`` (16 -> x unchanged)."""
    _validate(bits, clip_ratio)
    if bits == 16:
        return x
    qmax = 2 ** (bits - 1) - 1
    s = activation_scale(x, bits, clip_ratio)
    xf = x if x.dtype == torch.float64 else x.float()
    q = torch.clamp(torch.round(xf / s), -qmax - 1, qmax)
    return (q * s).to(x.dtype)


def act_quant_pre_hook(bits: int, clip_ratio: float = 1.0) -> Callable:
    """A forward pre-hook for nn.Linear (``module.register_forward_pre_hook(hook)``) that
    fake-quantizes the first positional input."""
    _validate(bits, clip_ratio)

    def hook(module: nn.Module, args: tuple):
        if bits == 16 or not args:
            return None
        return (fake_quantize_activation(args[0], bits, clip_ratio),) + tuple(args[1:])

    return hook


def register_act_quant(module: nn.Module, bits: int, clip_ratio: float = 1.0):
    """Attach the pre-hook; returns the handle (``handle.remove()`` undoes it). bits 16 -> None."""
    if bits == 16:
        _validate(bits, clip_ratio)
        return None
    return module.register_forward_pre_hook(act_quant_pre_hook(bits, clip_ratio))


class ActQuantizer(nn.Module):
    """nn.Module form, to put in front of a linear (e.g. inside a QuantLinear.forward)."""

    def __init__(self, bits: int, clip_ratio: float = 1.0):
        super().__init__()
        _validate(bits, clip_ratio)
        self.bits, self.clip_ratio = bits, clip_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize_activation(x, self.bits, self.clip_ratio)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, clip_ratio={self.clip_ratio}"
