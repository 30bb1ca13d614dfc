"""Round-to-nearest (RTN) group quantization: the dense base Q(W) without error feedback.

A thin wrapper over :mod:`mosaic_exp.quant.quantizer` so every method shares one set of
conventions (W is [N, K], group_size -1 = per-channel, last group shorter, unsigned codes,
dequantization (q - z) * s, symmetric zero 2^(bits-1)).
"""

from __future__ import annotations

import torch

from mosaic_exp.quant.quantizer import dequantize_weight, quantize_weight


def rtn_quantize(
    W: torch.Tensor, bits: int, group_size: int, symmetric: bool, clip_ratio: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RTN-quantize W [N, K] -> (codes uint8 [N, K], scales float32 [N, G], zeros float32 [N, G])."""
    return quantize_weight(W, bits, group_size, symmetric, clip_ratio)


def rtn_dequantize(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                   group_size: int) -> torch.Tensor:
    """Q(W) = (q - z) * s as float32 [N, K]."""
    return dequantize_weight(codes, scales, zeros, group_size)
