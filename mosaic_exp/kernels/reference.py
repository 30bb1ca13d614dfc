"""PyTorch reference of the W4A16 (+ residual) product: dequantize, matmul."""

from __future__ import annotations

import torch

from mosaic_exp.formats import QuantizedWeight


def reference_gemm(x: torch.Tensor, qw: QuantizedWeight, residual: bool = True,
                   acc_dtype: torch.dtype = torch.float64, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Y = X . W_hat^T computed in ``acc_dtype`` (float64 by default), W_hat = qw.dequantize()
    (or ``weight`` if given, e.g. scales pre-rounded to the kernel dtype). Returns acc_dtype."""
    if weight is None:
        weight = qw.dequantize() if residual else qw.dequantize_base()
    w = weight.to(device=x.device, dtype=acc_dtype)
    return x.to(acc_dtype) @ w.t()
