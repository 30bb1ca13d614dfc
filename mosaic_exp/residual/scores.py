"""Block scores: which residual blocks are worth keeping. Every selector returns float32 [nbr, nbc]
(``channel``: [1, K]); higher is better. A block B's residual Q(R)|_B is E_B (zero outside B).

All selectors accept the same keyword call (unused arguments are ignored), which is how
``score_blocks`` / ``SELECTORS`` dispatch:
    fn(R=..., QR=..., block_shape=..., W=None, h=None, H=None, seed=0, row_weight=None)

row_weight [N] (optional, the error-based selectors only: delta_hessian, channel, output_exact) weights
each output row's error, e.g. by the loss's sensitivity to that output channel
(:mod:`mosaic_exp.residual.sensitivity`): S_B = sum_i f_i (row i's part of the score).

delta_hessian : S_B = [ sum_B h_j R_ij^2 - sum_B h_j (R_ij - QR_ij)^2 ]_+ , h_j = (2/T) sum_t X_tj^2
                (the diagonal-Hessian estimate of the layer-output error removed by keeping B)
output_exact  : tr(R H R^T) - tr((R - E_B) H (R - E_B)^T) = 2 <E_B, R H>_B - tr(E_B H E_B^T)
                with the full H = (2/T) X^T X; equals (2/T)(||X R^T||^2 - ||X (R - E_B)^T||^2).
                Not clamped (it can be negative: keeping B can hurt through cross terms).
magnitude     : ||W_hat|_B||_F ;  residual_norm : ||R|_B||_F
channel       : delta_hessian with column blocks (N, 1): one score per input channel, [1, K]
random        : uniform in (0, 1], reproducible from ``seed`` (drawn on CPU, then moved)
none          : -inf everywhere (never selected: no residual at all)
"""

from __future__ import annotations

import torch

from mosaic_exp.config import ROW_WEIGHTED_SELECTORS
from mosaic_exp.residual.blocks import block_sum, grid_shape, resolve_block_shape, to_blocks


def _need(name: str, **tensors) -> None:
    for k, v in tensors.items():
        if v is None:
            raise ValueError(f"selector {name!r} needs {k}")


def _row_weight(row_weight, n: int, device) -> torch.Tensor | None:
    if row_weight is None:
        return None
    f = row_weight.float().reshape(-1).to(device)
    if f.numel() != n:
        raise ValueError(f"row_weight has {f.numel()} entries for a residual with {n} rows")
    return f.view(-1, 1)


def delta_hessian(R, QR, h, block_shape, row_weight=None, **_) -> torch.Tensor:
    _need("delta_hessian", R=R, QR=QR, h=h)
    R, QR = R.float(), QR.float()
    w = h.float().view(1, -1).to(R.device)
    f = _row_weight(row_weight, R.shape[0], R.device)
    if f is not None:
        w = f * w
    before = block_sum(w * R * R, block_shape)
    after = block_sum(w * (R - QR) ** 2, block_shape)
    return (before - after).clamp(min=0.0)


def output_exact(R, QR, H, block_shape, row_weight=None, **_) -> torch.Tensor:
    _need("output_exact", R=R, QR=QR, H=H)
    n, k = R.shape
    bh, bw = resolve_block_shape(block_shape, (n, k))
    dtype = torch.float64 if R.dtype == torch.float64 else torch.float32
    R, QR, H = R.to(dtype), QR.to(dtype), H.to(device=R.device, dtype=dtype)
    f = _row_weight(row_weight, n, R.device)
    f = torch.ones(n, 1, dtype=dtype, device=R.device) if f is None else f.to(dtype)
    cross = block_sum(f * QR * (R @ H), (bh, bw))               # sum_i f_i <E_B, R H>_B,i  (H symmetric)
    Eb = to_blocks(QR, (bh, bw))                                # [nbr, nbc, bh, bw]
    nbr, nbc = Eb.shape[:2]
    Hp = torch.nn.functional.pad(H, (0, nbc * bw - k, 0, nbc * bw - k))
    Hdiag = Hp.view(nbc, bw, nbc, bw).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # [nbc, bw, bw]
    quad_rows = torch.einsum("rcia,cab,rcib->rci", Eb, Hdiag, Eb)  # E_B,i H E_B,i^T per row i
    fb = torch.nn.functional.pad(f.view(-1), (0, nbr * bh - n)).view(nbr, 1, bh)
    quad = (quad_rows * fb).sum(dim=-1)                         # sum_i f_i (tr(E_B H E_B^T))_i
    return (2.0 * cross - quad).float()


def magnitude(W, block_shape, **_) -> torch.Tensor:
    _need("magnitude", W=W)
    return block_sum(W.float() ** 2, block_shape).sqrt()


def residual_norm(R, block_shape, **_) -> torch.Tensor:
    _need("residual_norm", R=R)
    return block_sum(R.float() ** 2, block_shape).sqrt()


def channel(R, QR, h, block_shape=None, row_weight=None, **_) -> torch.Tensor:
    """Whole input channels: delta_hessian with block shape (N, 1) -> [1, K] (block_shape ignored)."""
    return delta_hessian(R, QR, h, (R.shape[0], 1), row_weight=row_weight)


def random(R, block_shape, seed: int = 0, **_) -> torch.Tensor:
    _need("random", R=R)
    nbr, nbc = grid_shape(tuple(R.shape), block_shape)
    g = torch.Generator().manual_seed(int(seed))
    return (1.0 - torch.rand(nbr, nbc, generator=g)).to(R.device)


def none(R, block_shape, **_) -> torch.Tensor:
    nbr, nbc = grid_shape(tuple(R.shape), block_shape)
    return torch.full((nbr, nbc), float("-inf"), device=R.device)


SELECTORS = {
    "delta_hessian": delta_hessian,
    "magnitude": magnitude,
    "residual_norm": residual_norm,
    "output_exact": output_exact,
    "channel": channel,
    "random": random,
    "none": none,
}


def get_selector(name: str):
    try:
        return SELECTORS[name]
    except KeyError:
        raise ValueError(f"unknown residual selector {name!r}; choose one of {sorted(SELECTORS)}") from None


def selector_block_shape(name: str, shape: tuple[int, int], block_shape) -> tuple[int, int]:
    """The block shape a selector actually scores with ("channel" forces (N, 1))."""
    return (shape[0], 1) if name == "channel" else resolve_block_shape(block_shape, shape)


def score_blocks(name: str, *, R, QR=None, block_shape, W=None, h=None, H=None, seed: int = 0,
                 row_weight=None) -> torch.Tensor:
    """Dispatch by name; the one signature every selector shares (row_weight: ROW_WEIGHTED_SELECTORS only)."""
    if row_weight is not None and name == "none":
        row_weight = None  # no scores to weight
    if row_weight is not None and name not in ROW_WEIGHTED_SELECTORS:
        raise ValueError(f"selector {name!r} does not take row weights; those that do: {', '.join(ROW_WEIGHTED_SELECTORS)}")
    return get_selector(name)(R=R, QR=QR, block_shape=block_shape, W=W, h=h, H=H, seed=seed, row_weight=row_weight)
