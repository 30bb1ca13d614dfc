"""Assemble a QuantizedWeight from the base quantization and the selected residual blocks."""

from __future__ import annotations

import torch

from mosaic_exp.formats import QuantizedWeight, empty_residual
from mosaic_exp.quant.quantizer import pack_int4


def build_quantized_weight(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bits: int,
    group_size: int,
    symmetric: bool,
    residual_codes: torch.Tensor | None,
    residual_scales: torch.Tensor | None,
    mask: torch.Tensor | None,
    block_shape: tuple[int, int],
    meta: dict | None = None,
    scale_dtype: torch.dtype = torch.float32,
) -> QuantizedWeight:
    """codes uint8 [N, K] (unpacked; packed here when bits == 4), scales/zeros [N, G];
    residual_codes uint8 [nbr, nbc, bh, bw] (already padded: padding holds code 8), residual_scales
    [nbr, nbc, bh | 1], mask bool [nbr, nbc]. res_index lists the kept blocks row-major.
    ``scale_dtype`` (float32 default, or float16) is the storage dtype of base and residual scales/zeros;
    bits_per_weight counts 16 bits per scale either way. With float16 the stored weights differ from
    the float32 ones the scores were computed with by the fp16 rounding of the scales (~5e-4 rel.)."""
    n, k = codes.shape
    bh, bw = int(block_shape[0]), int(block_shape[1])
    base_q = pack_int4(codes) if bits == 4 else codes.to(torch.uint8)
    dev = codes.device
    kw = empty_residual((bh, bw), scale_dtype, dev)
    if mask is not None and bool(mask.any()):
        if residual_codes is None or residual_scales is None:
            raise ValueError("a non-empty mask needs residual_codes and residual_scales")
        if tuple(residual_codes.shape[2:]) != (bh, bw) or residual_codes.shape[:2] != mask.shape:
            raise ValueError(f"residual_codes {tuple(residual_codes.shape)} do not match mask "
                             f"{tuple(mask.shape)} and block_shape {(bh, bw)}")
        idx = mask.nonzero()  # row-major (sorted) order
        r, c = idx[:, 0], idx[:, 1]
        kw = {"res_index": idx.to(torch.int32),
              "res_qweight": pack_int4(residual_codes[r, c]),
              "res_scales": residual_scales[r, c].to(scale_dtype)}
    return QuantizedWeight(out_features=n, in_features=k, bits=bits, group_size=group_size,
                           symmetric=symmetric, base_qweight=base_q, base_scales=scales.to(scale_dtype),
                           base_zeros=zeros.to(scale_dtype), block_shape=(bh, bw), meta=dict(meta or {}), **kw)
