"""Glue between the layer-wise runner and the pure quantization math: one LinearQuantizer per linear.

It collects the input statistics a method needs (full Hessian for GPTQ / output_exact, its diagonal for
the Delta-Hessian score) through a forward pre-hook, then calls the method and returns a QuantizedWeight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mosaic_exp.config import RunConfig
from mosaic_exp.formats import QuantizedWeight
from mosaic_exp.quant.act import register_act_quant
from mosaic_exp.quant.gptq import GPTQ
from mosaic_exp.quant.quantizer import pack_int4
from mosaic_exp.quant.rtn import rtn_quantize

# Selectors that need the full Hessian X^T X rather than its diagonal.
_FULL_HESSIAN_SELECTORS = ("output_exact",)


@dataclass
class LinearResult:
    dequantized: torch.Tensor  # what the model computes with from now on (base, or base + residual)
    qweight: QuantizedWeight | None = None
    candidates: object | None = None  # global budget: residual candidates awaiting selection
    info: dict = field(default_factory=dict)


def needs_stats(cfg: RunConfig) -> bool:
    q = cfg.quant
    return q.method == "gptq" or (q.method == "mosaic" and (q.base == "gptq" or cfg.residual.budget > 0))


def _dense_qweight(codes, scales, zeros, cfg: RunConfig, n: int, k: int) -> QuantizedWeight:
    q = cfg.quant
    packed = pack_int4(codes) if q.w_bits == 4 else codes
    return QuantizedWeight(out_features=n, in_features=k, bits=q.w_bits, group_size=q.group_size,
                           symmetric=q.symmetric, base_qweight=packed.cpu(), base_scales=scales.half().cpu(),
                           base_zeros=zeros.half().cpu(), block_shape=cfg.residual.block_shape)


class LinearQuantizer:
    def __init__(self, name: str, weight: torch.Tensor, cfg: RunConfig):
        self.name = name
        self.weight = weight
        self.cfg = cfg
        q, r = cfg.quant, cfg.residual
        self.full_hessian = q.method == "gptq" or (
            q.method == "mosaic" and (q.base == "gptq" or r.selector in _FULL_HESSIAN_SELECTORS))
        self.gptq = GPTQ(weight.detach().float()) if self.full_hessian else None
        self.h_sum: torch.Tensor | None = None  # running sum of X^2 (diagonal only)
        self.tokens = 0

    def hook(self, _module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        if self.gptq is not None:
            self.gptq.add_batch(x)
        else:
            x = x.reshape(-1, x.shape[-1]).float()
            s = (x * x).sum(dim=0)
            self.h_sum = s if self.h_sum is None else self.h_sum + s
            self.tokens += x.shape[0]

    @property
    def h_diag(self) -> torch.Tensor:
        """h_j = (2/N) sum_n X_nj^2, the diagonal of H = 2 X^T X / N."""
        if self.gptq is not None:
            return self.gptq.h_diag
        return 2.0 * self.h_sum / max(self.tokens, 1)

    def quantize(self) -> LinearResult:
        q = self.cfg.quant
        w = self.weight.detach().float()
        n, k = w.shape
        if q.method == "rtn":
            codes, scales, zeros = rtn_quantize(w, q.w_bits, q.group_size, q.symmetric, q.clip_ratio)
            qw = _dense_qweight(codes, scales, zeros, self.cfg, n, k)
            return LinearResult(qw.dequantize().to(w.device), qw, info={"bits_per_weight": qw.bits_per_weight()})
        if q.method == "gptq":
            res = self.gptq.quantize(q.w_bits, q.group_size, q.symmetric, q.percdamp, q.act_order,
                                     q.static_groups, clip_ratio=q.clip_ratio)
            qw = _dense_qweight(res.codes, res.scales, res.zeros, self.cfg, n, k)
            self.gptq.free()
            return LinearResult(res.dequantized, qw, info={"bits_per_weight": qw.bits_per_weight(), **res.stats})
        if q.method == "mosaic":
            return self._mosaic(w)
        raise ValueError(f"quant.method={q.method!r} has no layer quantizer")

    def _mosaic(self, w: torch.Tensor) -> LinearResult:
        raise NotImplementedError("wired once the residual module lands")


def finalize_global(candidates: dict, budget: float) -> dict:
    raise NotImplementedError("wired once the residual module lands")


def install_act_quant(module: nn.Module, bits: int, clip_ratio: float) -> None:
    """Fake-quantize the inputs of a quantized linear per token (no-op at 16 bits)."""
    register_act_quant(module, bits, clip_ratio)
