"""GPTQ (Frantar et al., 2022) for one linear layer, following IST-DASLab's reference code.

Notation: W is [N, K] (out_features, in_features); X is [T, K] (T calibration tokens);
H = (2/T) * X^T X (float32, accumulated as a running average over batches, so each
``add_batch`` keeps H exactly equal to 2 X^T X / T over all tokens seen so far).
``h_diag`` = diag(H) = (2/T) * sum_t X_tj^2 is the h_j of the Delta-Hessian residual score.

Differences from the reference code (documented decisions):
  * T counts tokens (rows of the flattened input), not sequences, so H = 2 X^T X / T exactly.
  * Groups are contiguous column groups in the ORIGINAL column order (the shared convention
    of :mod:`mosaic_exp.quant.quantizer` and ``QuantizedWeight``; no g_idx). Therefore
    ``act_order=True`` with ``group_size != -1`` forces ``static_groups=True``: the scale and
    zero of each original group are computed up front from the (unupdated) weights, and a
    column processed in act-order uses its original group's parameters.
  * Without act_order, dynamic group parameters are computed when the first column of a group
    is reached, from the fully updated weights of that group (the block size is rounded to a
    multiple of the group size so a group never straddles two lazy-update blocks).
  * A Hessian whose damped Cholesky fails is retried with ``damp_factor`` times more damping
    (up to ``max_damp_retries`` times); if every attempt fails (or H is not finite) the layer
    falls back to RTN. ``stats`` records the damping used, the retries and the fallback; the
    caller logs them. Nothing raises on a bad Hessian.
  * Dead columns (H_jj == 0: the input channel is always zero) get H_jj = 1 and W[:, j] = 0,
    as in the reference code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from mosaic_exp.formats import RESIDUAL_BITS, RESIDUAL_ZERO
from mosaic_exp.quant.quantizer import (
    compute_qparams,
    dequantize_weight,
    effective_group_size,
    expand_groups,
    num_groups,
    quantize_codes,
    quantize_weight,
)


@dataclass
class GPTQResult:
    codes: torch.Tensor        # uint8 [N, K], original column order
    scales: torch.Tensor       # float32 [N, G]
    zeros: torch.Tensor        # float32 [N, G]
    dequantized: torch.Tensor  # float32 [N, K]: (codes - z) * s (= dequantize_weight(...)) [+ residual]
    stats: dict = field(default_factory=dict)
    # Per-column quantization error before propagation, w_upd - Q(w_upd), original column order
    # (R~ of the in-loop residual; GPTQ's loss is sum (col_err / hinv_diag)^2 / 2). None on RTN fallback.
    col_err: torch.Tensor | None = None
    hinv_diag: torch.Tensor | None = None  # [K] d_j = U_jj, U = chol(H^-1) upper, original order
    residual_codes: torch.Tensor | None = None  # uint8 [N, K] in-loop residual codes (8 outside the mask)

    def to_cpu(self) -> GPTQResult:
        kw = {f: getattr(self, f) for f in ("codes", "scales", "zeros", "dequantized", "col_err", "hinv_diag",
                                           "residual_codes")}
        return GPTQResult(stats=self.stats, **{k: (v.cpu() if v is not None else None) for k, v in kw.items()})


def damped_inverse_cholesky(
    H: torch.Tensor, percdamp: float, max_retries: int = 5, factor: float = 10.0
) -> tuple[torch.Tensor | None, float, int]:
    """Upper Cholesky factor of (H + percdamp * mean(diag H) * I)^-1, retrying with more damping.

    Returns (U or None, percdamp used, number of retries). U is None when every attempt failed.
    """
    diag_mean = torch.diagonal(H).abs().mean()
    if not torch.isfinite(diag_mean) or diag_mean == 0:
        diag_mean = torch.ones((), dtype=H.dtype, device=H.device)
    p = float(percdamp)
    for attempt in range(max_retries + 1):
        Hd = H.clone()
        Hd.diagonal().add_(p * diag_mean)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            # H^-1 = L^-T L^-1 (same as torch.cholesky_inverse, which is ~50x slower on CPU)
            Linv = torch.linalg.solve_triangular(L, torch.eye(L.shape[0], dtype=L.dtype, device=L.device),
                                                 upper=False)
            Hinv = Linv.T @ Linv
            U, info2 = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info2) == 0 and torch.isfinite(U).all():
                return U, p, attempt
        if attempt < max_retries:
            p *= factor
    return None, p, max_retries


class GPTQ:
    """Collects H = 2 X^T X / T for one layer and quantizes its weight with GPTQ."""

    def __init__(self, weight: torch.Tensor):
        if weight.dim() != 2:
            raise ValueError(f"expected a 2-D weight [N, K], got {tuple(weight.shape)}")
        self.weight = weight
        self.rows, self.columns = weight.shape
        self.H = torch.zeros(self.columns, self.columns, dtype=torch.float32, device=weight.device)
        self.nsamples = 0

    @torch.no_grad()
    def add_batch(self, inp: torch.Tensor) -> None:
        """Accumulate calibration inputs inp [..., K] (running average: H stays 2 X^T X / T)."""
        x = inp.detach().reshape(-1, self.columns).to(device=self.H.device, dtype=torch.float32)
        t = x.shape[0]
        if t == 0:
            return
        self.H.mul_(self.nsamples / (self.nsamples + t))
        self.nsamples += t
        x = math.sqrt(2.0 / self.nsamples) * x
        self.H.addmm_(x.t(), x)

    @property
    def h_diag(self) -> torch.Tensor:
        """h_j = (2/T) sum_t X_tj^2 = diag(H), float32 [K]."""
        return torch.diagonal(self.H).clone()

    def free(self) -> None:
        self.H = None  # type: ignore[assignment]

    @torch.no_grad()
    def quantize_many(self, weights: list[torch.Tensor], residual_masks: list[torch.Tensor] | None = None,
                      residual_scales: list[torch.Tensor] | None = None, **kwargs) -> list[GPTQResult]:
        """Quantize several weights that share this layer's input (q/k/v, gate/up) in ONE pass.

        GPTQ treats rows independently given H, so stacking the weights' rows gives exactly the
        per-weight results at the cost of one column loop instead of one per weight (the loop is
        launch-bound on a GPU). Damping retries are shared (same H). Returns one result per weight;
        ``stats`` are the pass's (``stats["stacked"]`` = number of weights).
        """
        if not weights:
            return []
        rows = [int(w.shape[0]) for w in weights]
        W = torch.cat([w.detach().float().to(self.H.device) for w in weights], dim=0)
        if residual_masks is not None:
            kwargs["residual_mask"] = torch.cat([m.to(self.H.device) for m in residual_masks], dim=0)
            kwargs["residual_scales"] = torch.cat([s.to(self.H.device) for s in residual_scales], dim=0)
        if kwargs.get("qparams") is not None:  # one (scales, zeros) pair per weight, stacked like the rows
            kwargs["qparams"] = tuple(torch.cat([qp[i].to(self.H.device) for qp in kwargs["qparams"]], dim=0)
                                      for i in (0, 1))
        res = self.quantize(weight=W, **kwargs)
        res.stats["stacked"] = len(weights)

        def split(t):
            return [None] * len(rows) if t is None else list(torch.split(t, rows, dim=0))

        parts = zip(split(res.codes), split(res.scales), split(res.zeros), split(res.dequantized),
                    split(res.col_err), split(res.residual_codes))
        return [GPTQResult(c, s, z, dq, dict(res.stats), col_err=ce, hinv_diag=res.hinv_diag, residual_codes=rc)
                for c, s, z, dq, ce, rc in parts]

    @torch.no_grad()
    def quantize(
        self,
        bits: int,
        group_size: int = -1,
        symmetric: bool = True,
        percdamp: float = 0.01,
        act_order: bool = False,
        static_groups: bool = False,
        blocksize: int = 128,
        clip_ratio: float = 1.0,
        max_damp_retries: int = 5,
        damp_factor: float = 10.0,
        weight: torch.Tensor | None = None,
        residual_mask: torch.Tensor | None = None,
        residual_scales: torch.Tensor | None = None,
        qparams: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> GPTQResult:
        """GPTQ-quantize ``weight`` (default: the layer weight given at construction).

        Returns codes/scales/zeros in the shared convention (fit ``QuantizedWeight`` directly).
        ``qparams`` = (scales, zeros) [N, G] (optional): the grid is given (e.g. ZipperQuant's scale rules) and GPTQ
        only chooses the codes on it; implies static groups.

        In-loop residual (optional): ``residual_mask`` bool [N, K] and ``residual_scales`` float [N, K]
        (elementwise, original column order). Where the mask is set, each column is quantized in two
        stages, base then a symmetric 4-bit residual r = w - Q(w) with the given fixed scale
        (code = clamp(round(r / s_r) + 8, 0, 15)), and GPTQ's error feedback compensates the error
        of the SUM, so later columns see the residual. ``dequantized`` then includes the residual;
        ``residual_codes`` holds the codes (8 outside the mask).
        """
        if self.nsamples == 0:
            raise ValueError("GPTQ.quantize called before add_batch (no calibration data)")
        W0 = (self.weight if weight is None else weight).detach()
        if W0.dim() != 2 or W0.shape[1] != self.columns:
            raise ValueError(f"weight shape {tuple(W0.shape)} does not have {self.columns} input columns")
        N, K = W0.shape
        dev = self.H.device
        ng = num_groups(K, group_size)
        gs = effective_group_size(K, group_size)
        grouped = ng > 1
        stats: dict = {"bits": bits, "group_size": group_size, "act_order": act_order,
                       "nsamples": self.nsamples, "percdamp_requested": percdamp,
                       "static_groups_forced": False, "fallback": None}
        if qparams is not None:
            qs, qz = qparams
            if tuple(qs.shape) != (N, ng) or tuple(qz.shape) != (N, ng):
                raise ValueError(f"qparams must be two [N, G] = {(N, ng)} tensors, got {tuple(qs.shape)} and "
                                 f"{tuple(qz.shape)}")
            if not bool((qs > 0).all()):
                raise ValueError("qparams: every scale must be positive")
            static_groups = True
            stats["qparams_given"] = True
        if act_order and grouped and not static_groups:
            static_groups = True
            stats["static_groups_forced"] = True
        stats["static_groups"] = static_groups

        W = W0.to(device=dev, dtype=torch.float32).clone()
        H = self.H.clone()

        def rtn_fallback(reason: str) -> GPTQResult:
            if qparams is not None:  # round to nearest on the given grid
                scales, zeros = qparams[0].to(dev, torch.float32), qparams[1].to(dev, torch.float32)
                codes = quantize_codes(W0.to(dev).float(), expand_groups(scales, K, group_size),
                                       expand_groups(zeros, K, group_size), bits).to(torch.uint8)
            else:
                codes, scales, zeros = quantize_weight(W0.to(dev).float(), bits, group_size, symmetric,
                                                       clip_ratio)
            stats.update(fallback="rtn", fallback_reason=reason)
            return GPTQResult(codes, scales, zeros, dequantize_weight(codes, scales, zeros, group_size),
                              stats)

        if not torch.isfinite(H).all():
            stats.update(percdamp_used=None, damp_retries=0, dead_columns=0)
            return rtn_fallback("non-finite Hessian")

        dead = torch.diagonal(H) == 0
        stats["dead_columns"] = int(dead.sum())
        H[dead, dead] = 1.0
        W[:, dead] = 0.0

        scales = torch.zeros(N, ng, device=dev)
        zeros = torch.zeros(N, ng, device=dev)
        if qparams is not None:
            scales, zeros = qparams[0].to(dev, torch.float32).clone(), qparams[1].to(dev, torch.float32).clone()
        elif not grouped or static_groups:  # parameters fixed up front, per ORIGINAL group
            for g in range(ng):
                cols = slice(g * gs, min((g + 1) * gs, K))
                scales[:, g], zeros[:, g] = compute_qparams(W[:, cols], bits, symmetric, clip_ratio)

        perm = None
        if act_order:
            perm = torch.argsort(torch.diagonal(H), descending=True)
            W = W[:, perm]
            H = H[perm][:, perm]
        col_orig = perm if perm is not None else torch.arange(K, device=dev)
        col_group = (col_orig // gs).tolist()

        Hinv, p_used, retries = damped_inverse_cholesky(H, percdamp, max_damp_retries, damp_factor)
        stats.update(percdamp_used=p_used, damp_retries=retries)
        if Hinv is None:
            if residual_mask is not None:  # callers must not build a residual on an RTN fallback
                stats["residual_in_loop"] = False
            return rtn_fallback(f"Cholesky failed after {retries} retries (percdamp up to {p_used:g})")
        del H

        use_res = residual_mask is not None
        if use_res:
            if residual_scales is None:
                raise ValueError("residual_mask needs residual_scales")
            if tuple(residual_mask.shape) != (N, K) or tuple(residual_scales.shape) != (N, K):
                raise ValueError(f"residual_mask/scales must be {(N, K)}, got {tuple(residual_mask.shape)} "
                                 f"and {tuple(residual_scales.shape)}")
            rmask = residual_mask.to(dev).bool()
            rscale = residual_scales.to(device=dev, dtype=torch.float32)
            rscale = torch.where(rmask & (rscale > 0), rscale, torch.ones_like(rscale))
            if perm is not None:
                rmask, rscale = rmask[:, perm], rscale[:, perm]
            rcodes = torch.full((N, K), RESIDUAL_ZERO, dtype=torch.uint8, device=dev)
            rzero = torch.full((N,), float(RESIDUAL_ZERO), device=dev)
            stats["residual_in_loop"] = True
            stats["residual_elements"] = int(rmask.sum())

        if grouped and not static_groups:
            blocksize = gs * max(1, blocksize // gs)
        maxq = 2**bits - 1
        codes = torch.zeros(N, K, dtype=torch.uint8, device=dev)
        col_err = torch.zeros(N, K, device=dev)
        Q = torch.zeros(N, K, device=dev)
        losses = torch.zeros(N, device=dev)
        # The column loop is launch-bound on a GPU: per column only the ops the recursion needs
        # (quantize, error, rank-1 update); codes, errors and losses are written per lazy block.
        for i1 in range(0, K, blocksize):
            i2 = min(i1 + blocksize, K)
            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            C1 = torch.zeros_like(W1)    # base codes (float) of this block
            E1 = torch.zeros_like(W1)    # w - Q(w) before propagation (col_err)
            Err1 = torch.zeros_like(W1)  # (w - q) / d: GPTQ's scaled error of the stored weight
            Hinv1 = Hinv[i1:i2, i1:i2]
            for i in range(i2 - i1):
                col = i1 + i
                w = W1[:, i]
                if grouped and not static_groups and col % gs == 0:
                    # The whole group lies in this block (blocksize is a multiple of gs).
                    g = col // gs
                    scales[:, g], zeros[:, g] = compute_qparams(W1[:, i:i + gs], bits, symmetric, clip_ratio)
                g = col_group[col]
                s, z = scales[:, g], zeros[:, g]
                q = torch.round(w / s).add_(z).clamp_(0, maxq)  # = quantize_codes(w, s, z, bits)
                C1[:, i] = q
                qd = (q - z).mul_(s)
                e = w - qd
                E1[:, i] = e
                if use_res:
                    rq = quantize_codes(e, rscale[:, col], rzero, RESIDUAL_BITS)
                    rq = torch.where(rmask[:, col], rq, rzero)
                    rcodes[:, col] = rq.to(torch.uint8)
                    qd = qd + (rq - rzero) * rscale[:, col]
                    e = w - qd
                Q1[:, i] = qd
                err = e / Hinv1[i, i]
                Err1[:, i] = err
                W1[:, i:].addr_(err, Hinv1[i, i:], alpha=-1.0)
            codes[:, i1:i2] = C1.to(torch.uint8)
            col_err[:, i1:i2] = E1
            Q[:, i1:i2] = Q1
            losses += Err1.pow(2).sum(dim=1) / 2  # sum over columns of (w - q)^2 / d^2 / 2
            W[:, i2:].addmm_(Err1, Hinv[i1:i2, i2:], alpha=-1.0)

        d = torch.diagonal(Hinv).clone()
        if perm is not None:
            inv = torch.argsort(perm)
            Q, codes, col_err, d = Q[:, inv], codes[:, inv], col_err[:, inv], d[inv]
            if use_res:
                rcodes = rcodes[:, inv]
        stats["gptq_loss"] = float(losses.sum())
        return GPTQResult(codes, scales, zeros, Q, stats, col_err=col_err, hinv_diag=d,
                          residual_codes=rcodes if use_res else None)
