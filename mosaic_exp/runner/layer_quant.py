"""Glue between the layer-wise runner and the pure quantization math: one GroupQuantizer per group of
linears that share an input.

It collects, once per group, the input statistics a method needs (full Hessian for GPTQ / output_exact,
its diagonal for the Delta-Hessian score) through a forward pre-hook, then calls the method and returns
one QuantizedWeight per linear.
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
    # what the model computes with from now on (base, or base + residual); None for ZipperQuant, whose
    # BitSplitLinear computes from the split weight itself
    dequantized: torch.Tensor | None
    qweight: QuantizedWeight | None = None
    candidates: object | None = None  # global budget: residual candidates awaiting selection
    info: dict = field(default_factory=dict)
    # global budget with the in-loop residual: the group's GPTQ object (H kept, shared by the group's
    # linears) for the second GPTQ pass once the model-wide selection is known
    gptq: GPTQ | None = None


def needs_calibration(cfg: RunConfig) -> bool:
    """Whether any calibration data is needed (RTN without smoothing quantizes weights directly;
    per-token activation quantization is dynamic and needs none)."""
    q = cfg.quant
    return (q.method in ("gptq", "mosaic") or (q.method == "zipperquant" and q.base == "gptq")
            or (q.method != "fp16" and q.smooth_alpha > 0))


def needs_stats(cfg: RunConfig) -> bool:
    """GPTQ needs H; MosaicQuant needs h for its scores and error reports even at budget 0 (the
    base-only row of a budget sweep reports the same proxy errors as the others); ZipperQuant reports its
    proxy errors with h."""
    return cfg.quant.method in ("gptq", "mosaic", "zipperquant")


def _dense_qweight(codes, scales, zeros, cfg: RunConfig, meta: dict) -> QuantizedWeight:
    """Base-only container; scales stored in fp16 (what bits_per_weight counts and kernels read)."""
    q = cfg.quant
    return build_quantized_weight(codes, scales, zeros, q.w_bits, q.group_size, q.symmetric, None, None, None,
                                  cfg.residual.block_shape, meta=meta, scale_dtype=torch.float16).to("cpu")


class GroupQuantizer:
    """The linears of one group share their input (q/k/v; gate/up): one statistics collector (one H,
    hooked on the first member) and, for GPTQ, one stacked column loop for all members (GPTQ rows are
    independent given H, so this equals one GPTQ run per linear). Residual blocks, scores and top-K
    stay per linear."""

    def __init__(self, names: list[str], weights: list[torch.Tensor], cfg: RunConfig,
                 row_weights: list[torch.Tensor | None] | None = None, counts: list[int] | None = None):
        """row_weights: per linear, the loss sensitivity of its output rows (``residual.sensitivity``);
        counts: per linear, the residual blocks to keep (``residual_counts``; default floor(budget * blocks))."""
        if len(names) != len(weights) or not names:
            raise ValueError("GroupQuantizer needs one weight per name")
        if row_weights is not None and len(row_weights) != len(names):
            raise ValueError(f"{len(row_weights)} row_weights for linears {names}")
        if len({w.shape[1] for w in weights}) != 1:
            raise ValueError(f"linears {names} do not share an input size: {[tuple(w.shape) for w in weights]}")
        self.names = list(names)
        self.weights = list(weights)
        self.cfg = cfg
        self.row_weights = list(row_weights) if row_weights is not None else [None] * len(names)
        self.counts = list(counts) if counts is not None else None
        q, r = cfg.quant, cfg.residual
        self.full_hessian = q.method == "gptq" or (q.method == "zipperquant" and q.base == "gptq") or (
            q.method == "mosaic" and (q.base == "gptq" or r.selector in _FULL_HESSIAN_SELECTORS))
        self.gptq = GPTQ(weights[0].detach().float()) if self.full_hessian else None
        self.h_sum: torch.Tensor | None = None  # running sum of X^2 (diagonal only)
        self.tokens = 0

    def hook(self, _module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        w0 = self.cfg.calib.sink_weight
        if w0 != 1.0 and x.dim() == 3:  # [windows, tokens, K]: re-weight each window's first token
            x = x.clone()
            x[:, 0] *= w0 ** 0.5
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

    def quantize(self) -> dict[str, LinearResult]:
        q = self.cfg.quant
        ws = [w.detach().float() for w in self.weights]
        if q.method == "rtn":
            out = {}
            for n, w in zip(self.names, ws):
                codes, scales, zeros = rtn_quantize(w, q.w_bits, q.group_size, q.symmetric, q.clip_ratio)
                qw = _dense_qweight(codes, scales, zeros, self.cfg, {"method": "rtn"})
                out[n] = LinearResult(qw.dequantize().to(w.device), qw, info={"bits_per_weight": qw.bits_per_weight()})
            return out
        if q.method == "gptq":
            results = self.gptq.quantize_many(ws, bits=q.w_bits, group_size=q.group_size, symmetric=q.symmetric,
                                              percdamp=q.percdamp, act_order=q.act_order,
                                              static_groups=q.static_groups, clip_ratio=q.clip_ratio)
            self._free()
            out = {}
            for n, w, res in zip(self.names, ws, results):
                qw = _dense_qweight(res.codes, res.scales, res.zeros, self.cfg, {"method": "gptq"})
                out[n] = LinearResult(qw.dequantize().to(w.device), qw,
                                      info={"bits_per_weight": qw.bits_per_weight(), **res.stats})
            return out
        if q.method == "mosaic":
            return self._mosaic(ws)
        if q.method == "zipperquant":
            return self._zipperquant(ws)
        raise ValueError(f"quant.method={q.method!r} has no layer quantizer")

    def _mosaic_kwargs(self) -> dict:
        q, r = self.cfg.quant, self.cfg.residual
        h = None if self.gptq is not None else self.h_diag
        return dict(base=q.base, gptq=self.gptq, h=h, bits=q.w_bits, group_size=q.group_size,
                    symmetric=q.symmetric, block_shape=r.block_shape, selector=r.selector,
                    granularity=r.granularity, seed=r.seed, clip_ratio=q.clip_ratio,
                    gptq_options=dict(percdamp=q.percdamp, act_order=q.act_order, static_groups=q.static_groups),
                    gptq_residual=r.gptq_residual)

    def _mosaic(self, ws: list[torch.Tensor]) -> dict[str, LinearResult]:
        from mosaic_exp.quant.mosaic import finalize, gptq_bases, mosaic_candidates, mosaic_quantize_group

        r = self.cfg.residual
        kw = self._mosaic_kwargs()
        if r.scope == "global":
            base_results = [None] * len(ws)
            if kw["base"] == "gptq":
                base_results = gptq_bases(self.gptq, ws, bits=kw["bits"], group_size=kw["group_size"],
                                          symmetric=kw["symmetric"], clip_ratio=kw["clip_ratio"],
                                          gptq_options=kw["gptq_options"])
            out = {}
            keep = None
            for n, w, br, f, w0 in zip(self.names, ws, base_results, self.row_weights, self.weights):
                cand = mosaic_candidates(w, base_result=br, row_weight=f, **kw)
                if cand.W_hat is not None:  # park it in the module's dtype (exact: w is w0 upcast); halves bf16 RAM
                    cand.W_hat = cand.W_hat.to(w0.dtype)
                # Until the global selection, the model computes with the base only.
                base = finalize(cand, torch.zeros_like(cand.scores, dtype=torch.bool))
                if cand.in_loop:  # the second GPTQ pass runs after the selection: park H on the CPU
                    keep = self.gptq
                out[n] = LinearResult(base.dequantize().to(w.device), candidates=cand.cpu(),
                                      info={"num_blocks": cand.num_blocks})
            if keep is not None:
                keep.H = keep.H.cpu()
                for res in out.values():
                    res.gptq = keep
            else:
                self._free()
            return out
        results = mosaic_quantize_group(ws, budget=r.budget, scale_dtype=torch.float16,
                                        row_weights=self.row_weights, counts=self.counts, **kw)
        self._free()
        return {n: LinearResult(qw.dequantize().to(w.device), qw.to("cpu"), info=info)
                for n, w, (qw, info) in zip(self.names, ws, results)}

    def _zipperquant(self, ws: list[torch.Tensor]) -> dict[str, LinearResult]:
        from mosaic_exp.quant.zipperquant import zipperquant_quantize_group

        q = self.cfg.quant
        h = self.h_diag if (self.h_sum is not None or self.gptq is not None) else None
        results = zipperquant_quantize_group(ws, bits=q.w_bits, low_bits=q.low_bits, group_size=q.group_size,
                                             scale_rule=q.scale_rule, outlier_fraction=q.outlier_fraction,
                                             clip_ratio=q.clip_ratio, h=h, gptq=self.gptq,
                                             gptq_options={"percdamp": q.percdamp, "act_order": q.act_order})
        out = {n: LinearResult(None, bsw, info=info) for n, (bsw, info) in zip(self.names, results)}
        self._free()
        return out

    def _free(self) -> None:
        if self.gptq is not None:
            self.gptq.free()


def residual_counts(layers, adapter, cfg: RunConfig) -> dict[str, int] | None:
    """Per-layer budget with residual.rounding=largest_remainder: every linear's block count K_l
    (``model.layers.{i}.{name}``), allocated over the whole model from the shapes alone; None otherwise."""
    from mosaic_exp.residual.blocks import grid_shape
    from mosaic_exp.residual.scores import selector_block_shape
    from mosaic_exp.residual.select import allocate_counts

    r = cfg.residual
    if cfg.quant.method != "mosaic" or r.scope != "per_layer" or r.rounding != "largest_remainder":
        return None
    blocks = {}
    for i, layer in enumerate(layers):
        for group in adapter.linear_groups:
            for n in group:
                shape = tuple(layer.get_submodule(n).weight.shape)
                nbr, nbc = grid_shape(shape, selector_block_shape(r.selector, shape, r.block_shape))
                blocks[f"model.layers.{i}.{n}"] = nbr * nbc
    return allocate_counts(blocks, r.budget)


def rank_scores(cand, rank: str) -> torch.Tensor:
    """A layer's block scores as ranked by the global budget (see ``finalize_global``)."""
    if rank == "absolute":
        return cand.scores
    if rank != "relative":
        raise ValueError(f"rank must be 'absolute' or 'relative', got {rank!r}")
    base = cand.proxy_base if cand.proxy_base is not None else cand.output_base
    if base is None:
        raise ValueError("rank='relative' needs the layer's base error (candidates built without h or H)")
    return cand.scores / base if base > 0 else torch.zeros_like(cand.scores)


def finalize_global(candidates: dict, budget: float, gptqs: dict | None = None,
                    device: torch.device | str = "cpu", rank: str = "absolute") -> dict:
    """Model-wide budget: rank every block of every layer, then build each layer's QuantizedWeight.

    rank="absolute" ranks the scores as they are (output-error units: they grow with depth and with
    activation outliers); "relative" divides each layer's scores by that layer's base error
    (``proxy_base`` = sum_j h_j R_ij^2, or tr(R H R^T) when only the full H is known), so a block is
    ranked by the share of its layer's error it removes.

    In-loop candidates need their group's GPTQ object (``gptqs[name]``, shared by the linears of a
    group): the group's second GPTQ pass runs once, stacked, on ``device``, and its H is freed after.
    """
    from mosaic_exp.quant.mosaic import candidates_info, finalize, in_loop_passes
    from mosaic_exp.residual.select import topk_global

    costs = {n: float(c.block_shape[0] * c.block_shape[1]) for n, c in candidates.items()}
    masks = topk_global({n: rank_scores(c, rank) for n, c in candidates.items()}, budget, weights_per_block=costs)
    in_loop_results: dict = {}
    groups: dict[int, list[str]] = {}  # linears by shared GPTQ object (None: no second pass)
    for n in candidates:
        groups.setdefault(id((gptqs or {}).get(n)), []).append(n)
    for names in groups.values():
        g = (gptqs or {}).get(names[0])
        if g is not None and g.H is not None:
            g.H = g.H.to(device)
        results = in_loop_passes(g, [candidates[n] for n in names], [masks[n] for n in names])
        if g is not None:
            g.free()
        in_loop_results.update({n: r.to_cpu() for n, r in zip(names, results) if r is not None})
    out = {}
    for n, c in candidates.items():
        qw = finalize(c, masks[n], meta={"budget": float(budget), "scope": "global"}, scale_dtype=torch.float16,
                      in_loop_result=in_loop_results.get(n))
        info = candidates_info(c, masks[n])
        info["bits_per_weight"] = qw.bits_per_weight()
        out[n] = (qw, info)
    return out


def install_act_quant(module: nn.Module, bits: int, clip_ratio: float) -> None:
    """Fake-quantize the inputs of a quantized linear per token (no-op at 16 bits)."""
    register_act_quant(module, bits, clip_ratio)


def install_result(layer: nn.Module, name: str, result: LinearResult, cfg: RunConfig) -> nn.Module:
    """Put a quantized linear in place inside ``layer``; returns the module that now computes it.

    Most methods keep the nn.Linear with its weight replaced by the dequantized one (and an activation
    fake-quant hook). ZipperQuant's layer computes two products with different activations (4-bit for the
    dense low bits, full precision for the sparse high bits), so a :class:`BitSplitLinear` takes its place."""
    from mosaic_exp.formats import BitSplitWeight

    mod = layer.get_submodule(name)
    q = cfg.quant
    if isinstance(result.qweight, BitSplitWeight):
        from mosaic_exp.kernels.bitsplit_linear import BitSplitLinear

        new = BitSplitLinear(result.qweight, bias=mod.bias, a_bits=q.a_bits, a_clip_ratio=q.a_clip_ratio,
                             high_kernel=q.high_kernel, dtype=mod.weight.dtype, device=mod.weight.device)
        parent_name, _, child = name.rpartition(".")
        setattr(layer.get_submodule(parent_name) if parent_name else layer, child, new)
        return new
    mod.weight.data.copy_(result.dequantized.to(mod.weight.dtype))
    install_act_quant(mod, q.a_bits, q.a_clip_ratio)
    return mod
