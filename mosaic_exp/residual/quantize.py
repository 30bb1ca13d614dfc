"""Q(R): symmetric 4-bit quantization of the residual R = W_hat - Q(W_hat), block by block.

granularity "row"  : one scale per row of each block  -> scales [nbr, nbc, bh]
granularity "block": one scale per block              -> scales [nbr, nbc, 1]
Scale = absmax / 7 (``compute_qparams``, symmetric 4-bit), code = clamp(round(r/s) + 8, 0, 15);
codes are stored unsigned (q + 8) as in ``QuantizedWeight``. Padded positions of edge blocks get
code 8 (value 0) and padded rows get scale 0, so a kernel that reads the padding still adds 0.
"""

from __future__ import annotations

import torch

from mosaic_exp.formats import RESIDUAL_BITS, RESIDUAL_ZERO
from mosaic_exp.quant.quantizer import compute_qparams, quantize_codes
from mosaic_exp.residual.blocks import from_blocks, resolve_block_shape, to_blocks, valid_mask

GRANULARITIES = ("row", "block")


def quantize_residual(
    R: torch.Tensor, block_shape, granularity: str = "row"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R [N, K] -> (codes uint8 [nbr, nbc, bh, bw], scales float32 [nbr, nbc, bh | 1], QR float32 [N, K])."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    shape = tuple(R.shape)
    bh, bw = resolve_block_shape(block_shape, shape)
    Rb = to_blocks(R.float(), (bh, bw))
    nbr, nbc = Rb.shape[:2]
    rows = Rb.reshape(-1, bw) if granularity == "row" else Rb.reshape(-1, bh * bw)
    scale, zero = compute_qparams(rows, RESIDUAL_BITS, symmetric=True)
    codes = quantize_codes(rows, scale, zero, RESIDUAL_BITS).to(torch.uint8).reshape(nbr, nbc, bh, bw)
    scales = scale.reshape(nbr, nbc, bh if granularity == "row" else 1)
    if granularity == "row":
        real_rows = valid_mask(shape, (bh, bw), device=R.device)[..., 0]  # [nbr, nbc, bh]
        scales = torch.where(real_rows, scales, torch.zeros_like(scales))
    QRb = (codes.float() - RESIDUAL_ZERO) * scales.unsqueeze(-1)
    return codes, scales, from_blocks(QRb, shape).contiguous()


def dequantize_residual_blocks(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(codes - 8) * scale -> float32 [nbr, nbc, bh, bw]."""
    return (codes.float() - RESIDUAL_ZERO) * scales.float().unsqueeze(-1)
