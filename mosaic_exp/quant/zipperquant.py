"""ZipperQuant for one layer: bit-based inlier / outlier disaggregation.

    W_hat [N, K]        smoothed weight (SmoothQuant moved the activation outliers into its columns)
    s [N, G]            one scale per group of ``group_size`` input columns (see the scale rules below)
    v = clamp(round(W_hat / s), -2^(B-1), 2^(B-1) - 1)          B-bit signed codes (B = ``bits``, 6)
    v = v_lo + 2^L v_hi, v_lo in [-2^(L-1), 2^(L-1) - 1]        the bit split (L = ``low_bits``, 4)
    W_lo = s v_lo       dense L-bit: every inlier and the low-order bits of the outliers (GPU)
    W_hi = s 2^L v_hi   sparse: nonzero only where v leaves the L-bit range (CPU, lookup-table kernel)
    W_q = W_lo + W_hi = s v  exactly (the split loses nothing).

With B = 6, L = 4 the high-order code v_hi is one of {-2, -1, 1, 2} wherever it is nonzero (v = 24..31 splits
as v_lo = v - 32, v_hi = 2), which is what lets the CPU kernel replace multiplications by table lookups
(:mod:`mosaic_exp.kernels.cpu_lut`).

Scale rules:
  "absmax"   s = clip_ratio * absmax / (2^(B-1) - 1): the plain B-bit symmetric grid. The high
             part is sparse only when the group's absmax is set by a few outliers (on SmolLM2 after smoothing
             with alpha 0.5 it is not: 24-46 % of each linear's weights get high-order bits).
  "inlier"   s = max(q_(1-rho)(|W|) / (2^(L-1) - 1), absmax / (2^(B-1) - 1)) per group: the L-bit range
             covers all but a fraction rho (``outlier_fraction``) of the group's weights, and the floor keeps
             every weight representable in B bits. The density of W_hi is then at most ~rho, whatever the
             distribution, at the price of a coarser grid for groups without outliers.
"""

from __future__ import annotations

import torch

from mosaic_exp.formats import BitSplitWeight, QuantizedWeight
from mosaic_exp.quant.gptq import GPTQ
from mosaic_exp.quant.quantizer import effective_group_size, expand_groups, num_groups, pack_int4

SCALE_RULES = ("absmax", "inlier")


def split_codes(v: torch.Tensor, low_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed codes v -> (v_lo in [-2^(L-1), 2^(L-1) - 1], v_hi) with v = v_lo + 2^L v_hi (int tensors)."""
    half = 2 ** (low_bits - 1)
    v = v.to(torch.int32)
    v_lo = torch.remainder(v + half, 2 ** low_bits) - half
    v_hi = torch.div(v - v_lo, 2 ** low_bits, rounding_mode="floor")
    return v_lo, v_hi


def group_scales(W: torch.Tensor, bits: int, low_bits: int, group_size: int, scale_rule: str,
                 outlier_fraction: float, clip_ratio: float = 1.0) -> torch.Tensor:
    """Scale per (row, group) [N, G] float32 under ``scale_rule`` (module docstring)."""
    N, K = W.shape
    gs, G = effective_group_size(K, group_size), num_groups(K, group_size)
    pad = G * gs - K
    a = W.abs().float()
    if pad:  # a shorter last group: pad with NaN, which amax / nanquantile skip
        a = torch.nn.functional.pad(a, (0, pad), value=float("nan"))
    a = a.view(N, G, gs)
    absmax = a.nan_to_num(0.0).amax(dim=-1) * clip_ratio
    s = absmax / (2 ** (bits - 1) - 1)
    if scale_rule == "inlier":
        inlier = torch.nanquantile(a, 1.0 - outlier_fraction, dim=-1) * clip_ratio
        s = torch.maximum(s, inlier / (2 ** (low_bits - 1) - 1))
    s = torch.where(s > 0, s, torch.ones_like(s))
    # the codes are rounded against the scale as stored (fp16; above fp16's smallest normal number)
    return s.clamp_min(2.0 ** -14).half().float()


def check_args(bits: int, low_bits: int, group_size: int, scale_rule: str, outlier_fraction: float) -> None:
    if not 2 <= low_bits < bits <= 8:
        raise ValueError(f"ZipperQuant needs 2 <= low_bits < bits <= 8, got low_bits={low_bits}, bits={bits}")
    if low_bits != 4:
        raise ValueError(f"low_bits={low_bits}: the dense part is stored as the 4-bit base format (low_bits=4)")
    if scale_rule not in SCALE_RULES:
        raise ValueError(f"scale_rule must be one of {SCALE_RULES}, got {scale_rule!r}")
    if not 0.0 < outlier_fraction < 1.0:
        raise ValueError(f"outlier_fraction must be in (0, 1), got {outlier_fraction}")
    if group_size != -1 and group_size <= 0:
        raise ValueError(f"group_size must be -1 (per-channel) or positive, got {group_size}")


@torch.no_grad()
def zipperquant_quantize_group(W_hats: list[torch.Tensor], *, bits: int = 6, low_bits: int = 4,
                               group_size: int = 128, scale_rule: str = "absmax", outlier_fraction: float = 0.01,
                               clip_ratio: float = 1.0, h: torch.Tensor | None = None, gptq: GPTQ | None = None,
                               gptq_options: dict | None = None) -> list[tuple[BitSplitWeight, dict]]:
    """Quantize (smoothed) weights [N_i, K] that share their input (q/k/v, gate/up) -> [(BitSplitWeight, info)].

    Each weight gets its own scales, codes and split, exactly as one ``zipperquant_quantize`` call per weight;
    with ``gptq`` only the GPTQ pass is stacked into one column loop (GPTQ rows are independent given H).
    h [K] (optional): the diagonal Hessian h_j = (2/N) sum_n X_nj^2 of the layer's calibration inputs, to
    report the proxy output error sum_ij h_j (W - W_q)_ij^2 and the share of it the high part removes.
    gptq (optional, with calibration statistics added): the B-bit codes are chosen by GPTQ on the scale rule's
    grid instead of rounded to nearest (its error feedback compensates the rounding of every column in the later
    ones); the split is the same. ``gptq_options``: percdamp, act_order, blocksize, ...
    """
    check_args(bits, low_bits, group_size, scale_rule, outlier_fraction)
    for W_hat in W_hats:
        if W_hat.dim() != 2:
            raise ValueError(f"expected a 2-D weight [N, K], got shape {tuple(W_hat.shape)}")
    Ws = [W_hat.detach().float() for W_hat in W_hats]
    scales = [group_scales(W, bits, low_bits, group_size, scale_rule, outlier_fraction, clip_ratio) for W in Ws]
    if gptq is not None:  # GPTQ picks the codes on this grid (zero point 2^(B-1): codes 0..2^B-1 = v + 2^(B-1))
        qparams = [(s, torch.full_like(s, float(2 ** (bits - 1)))) for s in scales]
        results = gptq.quantize_many(Ws, bits=bits, group_size=group_size, symmetric=True, qparams=qparams,
                                     **(gptq_options or {}))
        codes = [r.codes.to(W.device).float() - 2 ** (bits - 1) for r, W in zip(results, Ws)]
        stats = [r.stats for r in results]
    else:
        codes, stats = [], [None] * len(Ws)
        for W, s in zip(Ws, scales):
            s_col = expand_groups(s, W.shape[1], group_size)
            codes.append(torch.clamp(torch.round(W / s_col), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1))
    return [_split_weight(W, s, v, st, bits=bits, low_bits=low_bits, group_size=group_size, scale_rule=scale_rule,
                          outlier_fraction=outlier_fraction, h=h)
            for W, s, v, st in zip(Ws, scales, codes, stats)]


def zipperquant_quantize(W_hat: torch.Tensor, **kwargs) -> tuple[BitSplitWeight, dict]:
    """Quantize one (smoothed) weight [N, K] -> (BitSplitWeight, info); see ``zipperquant_quantize_group``."""
    return zipperquant_quantize_group([W_hat], **kwargs)[0]


def _split_weight(W: torch.Tensor, s: torch.Tensor, v: torch.Tensor, gptq_stats: dict | None, *, bits: int,
                  low_bits: int, group_size: int, scale_rule: str, outlier_fraction: float,
                  h: torch.Tensor | None) -> tuple[BitSplitWeight, dict]:
    """Scales s [N, G] and signed B-bit codes v [N, K] -> the stored split weight and its error report."""
    N, K = W.shape
    v_lo, v_hi = split_codes(v, low_bits)
    half = 2 ** (low_bits - 1)
    low = QuantizedWeight(out_features=N, in_features=K, bits=low_bits, group_size=group_size, symmetric=True,
                          base_qweight=pack_int4((v_lo + half).to(torch.uint8)), base_scales=s.half(),
                          base_zeros=torch.full_like(s, half).half(),
                          meta={"method": "zipperquant", "part": "low"})
    bsw = BitSplitWeight.from_dense_high(low, v_hi, bits=bits,
                                         meta={"method": "zipperquant", "scale_rule": scale_rule,
                                               "outlier_fraction": outlier_fraction if scale_rule == "inlier" else None})
    info = {"bits": bits, "low_bits": low_bits, "scale_rule": scale_rule, "high_nnz": bsw.high_nnz,
            "high_density": bsw.high_density, "bits_per_weight": bsw.bits_per_weight(),
            "base": "rtn" if gptq_stats is None else "gptq"}
    if gptq_stats is not None:
        info.update({f"gptq_{k}": x for k, x in gptq_stats.items() if isinstance(x, (int, float, str, type(None)))})
    # Errors are measured on what is stored (fp16 scales), not on the float32 scales above.
    Wq = bsw.dequantize().to(W.device)
    W_lo_only = bsw.low.dequantize().to(W.device)
    E, E_lo = W - Wq, W - W_lo_only
    info["weight_err"] = float((E * E).sum())
    info["weight_err_low_only"] = float((E_lo * E_lo).sum())
    if h is not None:
        hv = h.float().to(W.device).view(1, -1)
        info["proxy_err"] = float((hv * E * E).sum())
        info["proxy_err_low_only"] = float((hv * E_lo * E_lo).sum())
    return bsw, info
