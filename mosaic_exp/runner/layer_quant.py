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
from mosaic_exp.quant.rtn import rtn_quantize
from mosaic_exp.residual.build import build_quantized_weight

# Selectors that need the full Hessian X^T X rather than its diagonal.
_FULL_HESSIAN_SELECTORS = ("output_exact",)


@dataclass
class LinearResult:
    dequantized: torch.Tensor  # what the model computes with from now on (base, or base + residual)
    qweight: QuantizedWeight | None = None
    candidates: object | None = None  # global budget: residual candidates awaiting selection
    info: dict = field(default_factory=dict)


def needs_calibration(cfg: RunConfig) -> bool:
    """Whether any calibration data is needed (RTN without smoothing quantizes weights directly;
    per-token activation quantization is dynamic and needs none)."""
    q = cfg.quant
    return q.method in ("gptq", "mosaic") or (q.method != "fp16" and q.smooth_alpha > 0)


def needs_stats(cfg: RunConfig) -> bool:
    q = cfg.quant
    return q.method == "gptq" or (q.method == "mosaic" and (q.base == "gptq" or cfg.residual.budget > 0))


def _dense_qweight(codes, scales, zeros, cfg: RunConfig, meta: dict) -> QuantizedWeight:
    """Base-only container; scales stored in fp16 (what bits_per_weight counts and kernels read)."""
    q = cfg.quant
    return build_quantized_weight(codes, scales, zeros, q.w_bits, q.group_size, q.symmetric, None, None, None,
                                  cfg.residual.block_shape, meta=meta, scale_dtype=torch.float16).to("cpu")


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
        if q.method == "rtn":
            codes, scales, zeros = rtn_quantize(w, q.w_bits, q.group_size, q.symmetric, q.clip_ratio)
            qw = _dense_qweight(codes, scales, zeros, self.cfg, {"method": "rtn"})
            return LinearResult(qw.dequantize().to(w.device), qw, info={"bits_per_weight": qw.bits_per_weight()})
        if q.method == "gptq":
            res = self.gptq.quantize(q.w_bits, q.group_size, q.symmetric, q.percdamp, q.act_order,
                                     q.static_groups, clip_ratio=q.clip_ratio)
            qw = _dense_qweight(res.codes, res.scales, res.zeros, self.cfg, {"method": "gptq"})
            self._free()
            return LinearResult(qw.dequantize().to(w.device), qw,
                                info={"bits_per_weight": qw.bits_per_weight(), **res.stats})
        if q.method == "mosaic":
            return self._mosaic(w)
        raise ValueError(f"quant.method={q.method!r} has no layer quantizer")

    def _mosaic_kwargs(self) -> dict:
        q, r = self.cfg.quant, self.cfg.residual
        h = None if self.gptq is not None else self.h_diag
        return dict(base=q.base, gptq=self.gptq, h=h, bits=q.w_bits, group_size=q.group_size,
                    symmetric=q.symmetric, block_shape=r.block_shape, selector=r.selector,
                    granularity=r.granularity, seed=r.seed, clip_ratio=q.clip_ratio,
                    gptq_options=dict(percdamp=q.percdamp, act_order=q.act_order, static_groups=q.static_groups),
                    gptq_residual=r.gptq_residual)

    def _mosaic(self, w: torch.Tensor) -> LinearResult:
        from mosaic_exp.quant.mosaic import finalize, mosaic_candidates, mosaic_quantize

        r = self.cfg.residual
        if r.scope == "global":
            cand = mosaic_candidates(w, **self._mosaic_kwargs())
            # Until the global selection, the model computes with the base only.
            base = finalize(cand, torch.zeros_like(cand.scores, dtype=torch.bool))
            if cand.in_loop:
                raise ValueError("residual.scope=global needs residual.gptq_residual=post "
                                 "(in-loop GPTQ re-runs need every layer's Hessian at selection time)")
            self._free()
            return LinearResult(base.dequantize().to(w.device), candidates=cand.cpu(),
                                info={"num_blocks": cand.num_blocks})
        qw, info = mosaic_quantize(w, budget=r.budget, scale_dtype=torch.float16, **self._mosaic_kwargs())
        self._free()
        return LinearResult(qw.dequantize().to(w.device), qw.to("cpu"), info=info)

    def _free(self) -> None:
        if self.gptq is not None:
            self.gptq.free()


def finalize_global(candidates: dict, budget: float) -> dict:
    """Model-wide budget: rank every block of every layer, then build each layer's QuantizedWeight."""
    from mosaic_exp.quant.mosaic import candidates_info, finalize
    from mosaic_exp.residual.select import topk_global

    costs = {n: float(c.block_shape[0] * c.block_shape[1]) for n, c in candidates.items()}
    masks = topk_global({n: c.scores for n, c in candidates.items()}, budget, weights_per_block=costs)
    out = {}
    for n, c in candidates.items():
        qw = finalize(c, masks[n], meta={"budget": float(budget), "scope": "global"}, scale_dtype=torch.float16)
        info = candidates_info(c, masks[n])
        info["bits_per_weight"] = qw.bits_per_weight()
        out[n] = (qw, info)
    return out


def install_act_quant(module: nn.Module, bits: int, clip_ratio: float) -> None:
    """Fake-quantize the inputs of a quantized linear per token (no-op at 16 bits)."""
    register_act_quant(module, bits, clip_ratio)
