"""MosaicQuant for one layer: dense 4-bit base + a mosaic of 4-bit residual blocks.

    Q(W_hat)            dense base (RTN or GPTQ) of the (smoothed) weight W_hat [N, K]
    R = W_hat - Q(W_hat), partitioned into blocks; Q(R) symmetric 4-bit per block (row/block scales)
    S_B                 block score (selector; default the Delta-Hessian score)
    M_S                 top-K blocks under the budget
    W_q = Q(W_hat) + M_S * Q(R)

Two entry points:
  * ``mosaic_quantize``: per-layer budget, one call -> (QuantizedWeight, info);
    ``mosaic_quantize_group`` does the same for linears sharing H with one stacked GPTQ pass.
  * ``mosaic_candidates`` + ``finalize``: for a global (model-wide) budget. Build the candidates of
    every layer (``Candidates.cpu()`` to park them), rank with ``residual.select.topk_global``
    over ``{name: cand.scores}``, then ``finalize(cand, mask)`` per layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from mosaic_exp.formats import RESIDUAL_ZERO
from mosaic_exp.quant.gptq import GPTQ, GPTQResult
from mosaic_exp.quant.quantizer import dequantize_weight
from mosaic_exp.quant.rtn import rtn_quantize
from mosaic_exp.residual.blocks import block_sum, expand_mask, from_blocks, to_blocks
from mosaic_exp.residual.build import build_quantized_weight
from mosaic_exp.residual.quantize import quantize_residual
from mosaic_exp.residual.scores import get_selector, score_blocks, selector_block_shape
from mosaic_exp.residual.select import budget_count, topk_per_layer

BASES = ("rtn", "gptq")


@dataclass
class Candidates:
    """Everything needed to finalize a layer for any mask (CPU-storable via ``.cpu()``)."""
    shape: tuple[int, int]
    bits: int
    group_size: int
    symmetric: bool
    base: str
    selector: str
    granularity: str
    block_shape: tuple[int, int]
    base_codes: torch.Tensor        # uint8 [N, K]
    base_scales: torch.Tensor       # float32 [N, G]
    base_zeros: torch.Tensor        # float32 [N, G]
    residual_codes: torch.Tensor    # uint8 [nbr, nbc, bh, bw] (padding = code 8)
    residual_scales: torch.Tensor   # float32 [nbr, nbc, bh | 1]
    scores: torch.Tensor            # float32 [nbr, nbc]
    proxy_gain: torch.Tensor | None = None  # unclamped Delta-Hessian gain per block (None without h)
    proxy_base: float | None = None         # sum_ij h_j R_ij^2
    output_base: float | None = None        # tr(R H R^T)
    weight_err_base: float = 0.0            # ||R||_F^2
    stats: dict = field(default_factory=dict)
    # gptq_residual="in_loop": finalize re-runs GPTQ with the residual in the loop (needs the GPTQ
    # object); the scores/residual scales above were computed from GPTQ's per-column errors.
    in_loop: bool = False
    W_hat: torch.Tensor | None = None       # kept only when in_loop
    gptq_kwargs: dict = field(default_factory=dict)

    @property
    def num_blocks(self) -> int:
        return self.scores.numel()

    def to(self, device) -> Candidates:
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in kw.items():
            if isinstance(v, torch.Tensor):
                kw[k] = v.to(device)
        return Candidates(**kw)

    def cpu(self) -> Candidates:
        return self.to("cpu")


def _resolve_h(gptq: GPTQ | None, h, H):
    if H is None and gptq is not None and gptq.H is not None:
        H = gptq.H
    if h is None:
        if H is not None:
            h = torch.diagonal(H).clone()
        elif gptq is not None and gptq.H is not None:
            h = gptq.h_diag
    return h, H


@torch.no_grad()
def mosaic_candidates(
    W_hat: torch.Tensor,
    *,
    base: str = "rtn",
    gptq: GPTQ | None = None,
    h: torch.Tensor | None = None,
    H: torch.Tensor | None = None,
    bits: int = 4,
    group_size: int = 128,
    symmetric: bool = True,
    block_shape=(128, 128),
    selector: str = "delta_hessian",
    granularity: str = "row",
    seed: int = 0,
    clip_ratio: float = 1.0,
    gptq_options: dict | None = None,
    gptq_residual: str = "post",
    base_result: GPTQResult | None = None,
    row_weight: torch.Tensor | None = None,
) -> Candidates:
    """Base quantization + quantized residual of every block + block scores.

    gptq_residual (base="gptq" only):
      "post"    (the method as specified) R = W_hat - Q_gptq(W_hat), scored with h = diag(H).
                 Caveat: GPTQ's R is compensated across columns, so adding Q(R) back on a few blocks
                 can INCREASE the output error (see docs/method.md); check info["output_err_*"].
      "in_loop"  R~ = GPTQ's per-column error before propagation (w_upd - Q(w_upd)), scored with
                 h_j = 1 / U_jj^2 (GPTQ's own loss weights, U = chol(H^-1)); ``finalize`` then re-runs
                 GPTQ with the selected blocks quantized in two stages (base + 4-bit residual with the
                 scales of Q(R~)) so the error feedback compensates the sum. output_exact is not
                 available in this mode (R~ is not an output-space residual).

    h [K] (diag Hessian) and/or H [K, K] (full Hessian, 2 X^T X / T) default to the GPTQ object's.
    base_result: this weight's GPTQ base when it was already computed (``GPTQ.quantize_many`` over the
    linears sharing H); otherwise ``gptq.quantize`` runs here.
    row_weight [N] (optional): each output row's loss sensitivity F_i (``residual.sensitivity``), which
    turns the scores into loss units (see :mod:`mosaic_exp.residual.sensitivity`); error reports stay
    unweighted.
    The "channel" selector forces block_shape (N, 1) and granularity "block" (one scale per
    channel; per-row scales of a 1-wide block would be one fp16 scale per weight); recorded in
    ``stats["overrides"]``.
    """
    if base not in BASES:
        raise ValueError(f"base must be one of {BASES}, got {base!r}")
    if gptq_residual not in ("post", "in_loop"):
        raise ValueError(f"gptq_residual must be 'post' or 'in_loop', got {gptq_residual!r}")
    in_loop = base == "gptq" and gptq_residual == "in_loop"
    if in_loop and selector == "output_exact":
        raise ValueError("selector 'output_exact' is not defined for gptq_residual='in_loop'")
    get_selector(selector)  # clear error on unknown names before any work
    W = W_hat.detach().float()
    N, K = W.shape
    h, H = _resolve_h(gptq, h, H)
    stats: dict = {"overrides": {}}
    bshape = selector_block_shape(selector, (N, K), block_shape)
    if selector == "channel" and granularity != "block":
        stats["overrides"]["granularity"] = "block"
        granularity = "block"
    if selector == "channel":
        stats["overrides"]["block_shape"] = list(bshape)

    if base == "gptq":
        if gptq is None:
            raise ValueError("base='gptq' needs a GPTQ object with calibration data")
        res = base_result if base_result is not None else gptq.quantize(
            bits, group_size, symmetric, clip_ratio=clip_ratio, weight=W, **(gptq_options or {}))
        codes, scales, zeros, Qw = res.codes, res.scales, res.zeros, res.dequantized
        stats["gptq"] = res.stats
        if in_loop and res.stats["fallback"]:
            in_loop = False
            stats["overrides"]["gptq_residual"] = "post (GPTQ fell back to RTN)"
        stats["gptq_residual"] = "in_loop" if in_loop else ("post" if base == "gptq" else None)
    else:
        codes, scales, zeros = rtn_quantize(W, bits, group_size, symmetric, clip_ratio)
        Qw = dequantize_weight(codes, scales, zeros, group_size)
    Qw = Qw.to(W.device)
    R = W - Qw
    if in_loop:  # score GPTQ's per-column errors with GPTQ's own loss weights 1/U_jj^2
        Rs, hs, Hs = res.col_err.to(W.device), res.hinv_diag.to(W.device).pow(-2), None
    else:
        Rs, hs, Hs = R, h, H
    rcodes, rscales, QR = quantize_residual(Rs, bshape, granularity)
    scores = score_blocks(selector, R=Rs, QR=QR, block_shape=bshape, W=W, h=hs, H=Hs, seed=seed,
                          row_weight=row_weight).float()

    proxy_gain = proxy_base = output_base = None
    if hs is not None:
        hv = hs.float().to(W.device).view(1, -1)
        proxy_gain = (block_sum(hv * Rs * Rs, bshape) - block_sum(hv * (Rs - QR) ** 2, bshape)).float()
        proxy_base = float((hv * Rs * Rs).sum())
    if H is not None:
        output_base = float(((R @ H.float().to(W.device)) * R).sum())
    return Candidates(shape=(N, K), bits=bits, group_size=group_size, symmetric=symmetric, base=base,
                      selector=selector, granularity=granularity, block_shape=bshape,
                      base_codes=codes, base_scales=scales, base_zeros=zeros,
                      residual_codes=rcodes, residual_scales=rscales, scores=scores,
                      proxy_gain=proxy_gain, proxy_base=proxy_base, output_base=output_base,
                      weight_err_base=float((R * R).sum()), stats=stats, in_loop=in_loop,
                      # a copy: W aliases a float32 caller's weight, which the runner overwrites with the
                      # base before a global budget's deferred in-loop pass reads W_hat
                      W_hat=W.clone() if in_loop else None,
                      gptq_kwargs=dict(bits=bits, group_size=group_size, symmetric=symmetric,
                                       clip_ratio=clip_ratio, **(gptq_options or {})) if in_loop else {})


def in_loop_inputs(candidates: Candidates, mask: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise residual mask and scales [N, K] for GPTQ's in-loop pass over the blocks of ``mask``."""
    c = candidates
    elem_mask = expand_mask(mask.to(device), c.shape, c.block_shape)
    bh, bw = c.block_shape
    rs = c.residual_scales.to(device)
    elem_scales = from_blocks(rs.unsqueeze(-1).expand(*rs.shape[:2], bh, bw), c.shape)
    return elem_mask, elem_scales


def finalize(candidates: Candidates, mask: torch.Tensor, meta: dict | None = None,
             scale_dtype: torch.dtype = torch.float32, gptq: GPTQ | None = None,
             in_loop_result: GPTQResult | None = None):
    """QuantizedWeight with the residual blocks of ``mask`` [nbr, nbc] kept (scales stored as
    ``scale_dtype``). In-loop candidates with a non-empty mask need GPTQ re-run with the residual of
    the masked blocks in its loop: pass its result (``in_loop_result``, from ``in_loop_inputs``) or the
    layer's GPTQ object (``gptq``, H still present) to run it here."""
    c = candidates
    if tuple(mask.shape) != tuple(c.scores.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} != score grid {tuple(c.scores.shape)}")
    m = {"method": "mosaic", "base": c.base, "selector": c.selector, "granularity": c.granularity,
         "gptq_residual": c.stats.get("gptq_residual")}
    m.update(meta or {})
    codes, scales, zeros = c.base_codes, c.base_scales, c.base_zeros
    rcodes, rs = c.residual_codes, c.residual_scales
    if c.in_loop and bool(mask.any()):
        res = in_loop_result if in_loop_result is not None else in_loop_passes(gptq, [c], [mask])[0]
        if res.residual_codes is None:
            raise RuntimeError(f"in-loop GPTQ pass failed: {res.stats.get('fallback_reason')}")
        codes, scales, zeros = res.codes, res.scales, res.zeros
        rcodes = (to_blocks(res.residual_codes.float() - RESIDUAL_ZERO, c.block_shape)
                  + RESIDUAL_ZERO).to(torch.uint8)
        m["gptq_in_loop"] = {"gptq_loss": res.stats["gptq_loss"],
                             "residual_elements": res.stats["residual_elements"]}
    return build_quantized_weight(codes, scales, zeros, c.bits, c.group_size,
                                  c.symmetric, rcodes, rs.to(rcodes.device),
                                  mask.to(rcodes.device), c.block_shape, meta=m,
                                  scale_dtype=scale_dtype)


def _summary(t: torch.Tensor) -> dict:
    f = t.reshape(-1).double().cpu()
    fin = f[torch.isfinite(f)]
    if fin.numel() == 0:
        return {"count": f.numel(), "finite": 0}
    return {"count": f.numel(), "finite": fin.numel(), "min": float(fin.min()), "max": float(fin.max()),
            "mean": float(fin.mean()), "median": float(fin.median()), "num_positive": int((fin > 0).sum())}


def gptq_bases(gptq: GPTQ, W_hats: list[torch.Tensor], *, bits: int, group_size: int, symmetric: bool,
               clip_ratio: float = 1.0, gptq_options: dict | None = None) -> list[GPTQResult]:
    """GPTQ bases of weights sharing H, in one stacked pass (``base_result`` of ``mosaic_candidates``)."""
    if gptq is None:
        raise ValueError("base='gptq' needs a GPTQ object with calibration data")
    return gptq.quantize_many([w.detach().float() for w in W_hats], bits=bits, group_size=group_size,
                              symmetric=symmetric, clip_ratio=clip_ratio, **(gptq_options or {}))


def in_loop_passes(gptq: GPTQ, cands: list[Candidates], masks: list[torch.Tensor]) -> list[GPTQResult | None]:
    """GPTQ's second pass for the in-loop candidates of one group with a non-empty mask, stacked into one
    column loop (``in_loop_result`` of ``finalize``); None where no pass is needed."""
    out: list = [None] * len(cands)
    rerun = [i for i, (c, m) in enumerate(zip(cands, masks)) if c.in_loop and bool(m.any())]
    if not rerun:
        return out
    if gptq is None or gptq.H is None:
        raise ValueError("in-loop candidates need their group's GPTQ object (with H)")
    dev = gptq.H.device
    inputs = [in_loop_inputs(cands[i], masks[i], dev) for i in rerun]
    results = gptq.quantize_many([cands[i].W_hat for i in rerun], residual_masks=[m for m, _ in inputs],
                                 residual_scales=[s for _, s in inputs], **cands[rerun[0]].gptq_kwargs)
    for i, r in zip(rerun, results):
        out[i] = r
    return out


@torch.no_grad()
def mosaic_quantize_group(
    W_hats: list[torch.Tensor],
    *,
    base: str = "rtn",
    gptq: GPTQ | None = None,
    h: torch.Tensor | None = None,
    H: torch.Tensor | None = None,
    bits: int = 4,
    group_size: int = 128,
    symmetric: bool = True,
    budget: float = 0.1,
    block_shape=(128, 128),
    selector: str = "delta_hessian",
    granularity: str = "row",
    seed: int = 0,
    clip_ratio: float = 1.0,
    gptq_options: dict | None = None,
    gptq_residual: str = "post",
    allow_nonpositive: bool = False,
    scale_dtype: torch.dtype = torch.float32,
    row_weights: list[torch.Tensor | None] | None = None,
    counts: list[int] | None = None,
) -> list[tuple]:
    """Linears sharing one input (q/k/v, gate/up), per-layer budget -> [(QuantizedWeight, info)].

    Each weight gets its own blocks, scores and top-K, exactly as one ``mosaic_quantize`` call per
    weight; only the GPTQ passes (base, and the in-loop re-run) are stacked into one column loop.
    The info's final errors are measured on the stored weight (``qw.dequantize()``).
    row_weights: one optional ``row_weight`` per weight (see ``mosaic_candidates``).
    counts: each weight's number of blocks to keep (``residual.select.allocate_counts`` over the model);
    default floor(budget * blocks) per weight.
    """
    h, H = _resolve_h(gptq, h, H)
    if row_weights is None:
        row_weights = [None] * len(W_hats)
    if len(row_weights) != len(W_hats):
        raise ValueError(f"{len(row_weights)} row_weights for {len(W_hats)} weights")
    base_results = [None] * len(W_hats)
    if base == "gptq":
        get_selector(selector)  # clear error on unknown names before the GPTQ pass
        base_results = gptq_bases(gptq, W_hats, bits=bits, group_size=group_size, symmetric=symmetric,
                                  clip_ratio=clip_ratio, gptq_options=gptq_options)
    cands = [mosaic_candidates(W, base=base, gptq=gptq, h=h, H=H, bits=bits, group_size=group_size,
                               symmetric=symmetric, block_shape=block_shape, selector=selector,
                               granularity=granularity, seed=seed, clip_ratio=clip_ratio,
                               gptq_options=gptq_options, gptq_residual=gptq_residual, base_result=r,
                               row_weight=f)
             for W, r, f in zip(W_hats, base_results, row_weights)]
    counts = [None] * len(W_hats) if counts is None else list(counts)
    if len(counts) != len(W_hats):
        raise ValueError(f"{len(counts)} counts for {len(W_hats)} weights")
    masks = [topk_per_layer(c.scores, budget, allow_nonpositive=allow_nonpositive, k=k) for c, k in zip(cands, counts)]
    in_loop_results = in_loop_passes(gptq, cands, masks)
    out = []
    for W, cand, mask, r, k in zip(W_hats, cands, masks, in_loop_results, counts):
        qw = finalize(cand, mask, meta={"budget": float(budget)}, scale_dtype=scale_dtype, in_loop_result=r)
        info = candidates_info(cand, mask, budget)
        if k is not None:
            info["target_k"] = k
        Rf = W.detach().float() - qw.dequantize().to(W.device)  # R - M_S * Q(R)
        info["weight_err_final"] = float((Rf * Rf).sum())
        if H is not None:  # exact output error tr(R' H R'^T) of the final layer
            info["output_err_final"] = float(((Rf @ H.float().to(Rf.device)) * Rf).sum())
        info["bits_per_weight"] = qw.bits_per_weight()
        out.append((qw, info))
    return out


def mosaic_quantize(W_hat: torch.Tensor, **kwargs):
    """One layer, per-layer budget -> (QuantizedWeight, info); see ``mosaic_quantize_group``."""
    return mosaic_quantize_group([W_hat], **kwargs)[0]


def candidates_info(cand: Candidates, mask: torch.Tensor, budget: float | None = None) -> dict:
    """Summary of a layer's scores and the error reductions of ``mask`` (JSON-serializable)."""
    mask = mask.to(cand.scores.device).bool()
    info = {"base": cand.base, "selector": cand.selector, "granularity": cand.granularity,
            "block_shape": list(cand.block_shape), "num_blocks": cand.num_blocks,
            "chosen": int(mask.sum()), "scores": _summary(cand.scores), "stats": cand.stats}
    if budget is not None:
        info["budget"] = float(budget)
        info["target_k"] = budget_count(budget, cand.num_blocks)
    if info["chosen"]:
        info["scores"]["chosen_min"] = float(cand.scores[mask].min())
    info["weight_err_base"] = cand.weight_err_base
    if cand.proxy_gain is not None:
        red = float(cand.proxy_gain[mask].sum())
        info["proxy_err_base"] = cand.proxy_base
        info["proxy_err_final"] = cand.proxy_base - red
        info["proxy_reduction"] = red / cand.proxy_base if cand.proxy_base else 0.0
    if cand.output_base is not None:
        info["output_err_base"] = cand.output_base
    return info
