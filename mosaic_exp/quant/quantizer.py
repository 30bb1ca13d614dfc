"""Uniform integer quantization of weight matrices: the math every method shares.

Conventions (used by every method, the QuantizedWeight container and the kernels):
  * W has shape [N, K] (out_features, in_features), as in ``nn.Linear.weight``.
  * ``group_size = -1`` means one group per output row (per-channel); otherwise groups of
    ``group_size`` consecutive input columns. When K is not a multiple of the group size the
    last group is shorter (K=576, g=128 -> groups of 128,128,128,128,64).
  * Codes are unsigned integers in [0, 2^bits - 1]; dequantization is ``(q - z) * s``.
    Symmetric quantization uses the fixed zero point z = 2^(bits-1), so codes stay unsigned
    and one dequantization formula serves both modes.
"""

from __future__ import annotations

import math

import torch


def num_groups(in_features: int, group_size: int) -> int:
    """Number of column groups of a [N, K] matrix (per-channel -> 1)."""
    if group_size == -1 or group_size >= in_features:
        return 1
    if group_size <= 0:
        raise ValueError(f"group_size must be -1 or positive, got {group_size}")
    return math.ceil(in_features / group_size)


def effective_group_size(in_features: int, group_size: int) -> int:
    """The group size actually used along K (per-channel -> K)."""
    return in_features if group_size == -1 or group_size >= in_features else group_size


def group_index(in_features: int, group_size: int, device=None) -> torch.Tensor:
    """g_idx[k]: the group that input column k belongs to (shape [K], int64)."""
    gs = effective_group_size(in_features, group_size)
    return torch.arange(in_features, device=device) // gs


def compute_qparams(
    w: torch.Tensor, bits: int, symmetric: bool, clip_ratio: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point per row of ``w`` ([R, C] -> [R], [R]), min-max (optionally clipped).

    Zero is returned as a float tensor holding an integer value (asymmetric: round(-min/s);
    symmetric: 2^(bits-1)). A row of zeros gets scale 1 so nothing divides by zero.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be in 2..8, got {bits}")
    maxq = 2**bits - 1
    w = w.float()
    if symmetric:
        amax = w.abs().amax(dim=1) * clip_ratio
        # Codes span [-2^(b-1), 2^(b-1)-1]; scale by the positive half so +amax is representable.
        scale = amax / (2 ** (bits - 1) - 1) if bits > 1 else amax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.full_like(scale, 2 ** (bits - 1))
    else:
        wmin = torch.clamp(w.amin(dim=1) * clip_ratio, max=0.0)
        wmax = torch.clamp(w.amax(dim=1) * clip_ratio, min=0.0)
        scale = (wmax - wmin) / maxq
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.round(-wmin / scale)
    return scale, zero


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes for ``w`` [R, C] with per-row (or broadcastable) scale/zero: clamp(round(w/s)+z)."""
    maxq = 2**bits - 1
    s = scale if scale.dim() == w.dim() else scale.unsqueeze(-1)
    z = zero if zero.dim() == w.dim() else zero.unsqueeze(-1)
    return torch.clamp(torch.round(w.float() / s) + z, 0, maxq)


def fake_quantize_rows(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize-dequantize ``w`` with per-row scale/zero (GPTQ's inner step)."""
    s = scale if scale.dim() == w.dim() else scale.unsqueeze(-1)
    z = zero if zero.dim() == w.dim() else zero.unsqueeze(-1)
    return (quantize_codes(w, scale, zero, bits) - z) * s


def expand_groups(t: torch.Tensor, in_features: int, group_size: int) -> torch.Tensor:
    """[N, G] per-group values -> [N, K] per-column values."""
    gidx = group_index(in_features, group_size, device=t.device)
    return t[:, gidx]


def quantize_weight(
    w: torch.Tensor, bits: int, group_size: int, symmetric: bool, clip_ratio: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest group quantization of W [N, K].

    Returns (codes uint8 [N, K], scales float32 [N, G], zeros float32 [N, G]).
    """
    if w.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(w.shape)}")
    n, k = w.shape
    gs = effective_group_size(k, group_size)
    ng = num_groups(k, group_size)
    w = w.float()
    scales = torch.empty(n, ng, device=w.device)
    zeros = torch.empty(n, ng, device=w.device)
    codes = torch.empty(n, k, dtype=torch.uint8, device=w.device)
    for g in range(ng):
        cols = slice(g * gs, min((g + 1) * gs, k))
        s, z = compute_qparams(w[:, cols], bits, symmetric, clip_ratio)
        scales[:, g], zeros[:, g] = s, z
        codes[:, cols] = quantize_codes(w[:, cols], s, z, bits).to(torch.uint8)
    return codes, scales, zeros


def dequantize_weight(
    codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int
) -> torch.Tensor:
    """Inverse of :func:`quantize_weight`: (q - z) * s, float32 [N, K]."""
    k = codes.shape[1]
    s = expand_groups(scales.float(), k, group_size)
    z = expand_groups(zeros.float(), k, group_size)
    return (codes.float() - z) * s


def fake_quantize_weight(
    w: torch.Tensor, bits: int, group_size: int, symmetric: bool, clip_ratio: float = 1.0
) -> torch.Tensor:
    """Quantize-dequantize W in one call (RTN)."""
    codes, scales, zeros = quantize_weight(w, bits, group_size, symmetric, clip_ratio)
    return dequantize_weight(codes, scales, zeros, group_size).to(w.dtype)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes [..., C] (uint8 in 0..15) two per byte -> uint8 [..., ceil(C/2)].

    Low nibble holds the even column, high nibble the odd one; an odd C is padded with 0.
    """
    if codes.numel() and int(codes.max()) > 15:
        raise ValueError("pack_int4 got a code above 15")
    c = codes.to(torch.uint8)
    if c.shape[-1] % 2:
        c = torch.nn.functional.pad(c, (0, 1))
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_int4(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: uint8 [..., ceil(C/2)] -> uint8 [..., C]."""
    lo = packed & 0x0F
    hi = packed >> 4
    out = torch.stack((lo, hi), dim=-1).flatten(-2)
    return out[..., :cols]


def bits_per_weight_dense(bits: int, in_features: int, group_size: int, symmetric: bool,
                          scale_bits: int = 16) -> float:
    """Storage cost of a dense quantized matrix per weight: codes + per-group scale (+ zero)."""
    ng = num_groups(in_features, group_size)
    per_row = bits * in_features + ng * scale_bits + (0 if symmetric else ng * bits)
    return per_row / in_features
