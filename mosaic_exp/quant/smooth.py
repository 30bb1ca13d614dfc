"""SmoothQuant-style migration (Xiao et al., 2023): X_hat = X diag(s)^-1, W_hat = W diag(s).

For input channel j of a group of linears that read the same activation X [T, K]:
    s_j = max_t |X_tj|^alpha / max_{i, over all linears} |W_ij|^(1 - alpha),  clamped to >= eps
(the absolute maxima are clamped to >= eps first, so a dead channel never divides by zero).
alpha = 0 is "off": s = 1 exactly (not max|W|^-1), so nothing changes.

Where the 1/s is folded (the product X_hat W_hat^T = X W^T is unchanged, exactly):
  * input_layernorm -> q_proj, k_proj, v_proj          : ``apply_smoothing`` (norm weight /= s)
  * post_attention_layernorm -> gate_proj, up_proj     : ``apply_smoothing``
  * v_proj -> o_proj (optional)                         : ``fold_into_linear`` with head_dim and
    n_rep = num_heads // num_kv_heads. Exact because attention is linear in V per head: dividing
    v_proj's output channel c by s_c divides the attention output of every query head that reads
    kv head c // head_dim by the same s_c. Under GQA the scale of kv channel c is shared by its
    n_rep query heads, so reduce o_proj's input absmax with ``reduce_kv_absmax`` first.
  * up_proj -> down_proj (optional)                     : ``fold_into_linear`` (n_rep = 1); exact
    because down_proj reads silu(gate) * up, which is linear in up's output.
Not smoothed: anything whose producer is not linear per channel (e.g. RoPE-rotated q/k outputs;
norms of the Gemma "(1 + weight)" form, which ``apply_smoothing`` refuses).
"""

from __future__ import annotations

import torch
from torch import nn


def smooth_scales(
    act_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float, eps: float = 1e-5
) -> torch.Tensor:
    """s [K] (float32, or float64 if act_absmax is float64) for linears sharing one input."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    k = act_absmax.numel()
    for w in weights:
        if w.dim() != 2 or w.shape[1] != k:
            raise ValueError(f"weight shape {tuple(w.shape)} does not have in_features={k}")
    dtype = torch.float64 if act_absmax.dtype == torch.float64 else torch.float32
    if alpha == 0.0:
        return torch.ones(k, dtype=dtype, device=act_absmax.device)
    a = act_absmax.detach().to(dtype).abs().clamp(min=eps)
    w_absmax = torch.stack([w.detach().abs().amax(dim=0).to(device=a.device, dtype=dtype)
                            for w in weights]).amax(dim=0).clamp(min=eps)
    return (a.pow(alpha) / w_absmax.pow(1.0 - alpha)).clamp(min=eps)


@torch.no_grad()
def scale_input_columns(linears: list[nn.Linear], s: torch.Tensor) -> None:
    """W[:, j] *= s_j for each linear (in place)."""
    for lin in linears:
        lin.weight.mul_(s.to(device=lin.weight.device, dtype=lin.weight.dtype).view(1, -1))


@torch.no_grad()
def apply_smoothing(s: torch.Tensor, linears: list[nn.Linear], norm: nn.Module | None) -> None:
    """Multiply the input columns of ``linears`` by s and fold 1/s into ``norm`` (weight, bias).

    ``norm`` must compute ``weight * normalized (+ bias)`` (LayerNorm, Llama/Qwen/Mistral RMSNorm).
    With ``norm=None`` only the weights are scaled: the caller must divide the activations by s.
    """
    if norm is not None:
        if type(norm).__name__.lower().startswith("gemma"):
            raise NotImplementedError("Gemma-style norms (1 + weight) cannot absorb 1/s by division")
        weight = getattr(norm, "weight", None)
        if weight is None:
            raise ValueError(f"{type(norm).__name__} has no affine weight to fold 1/s into")
        weight.div_(s.to(device=weight.device, dtype=weight.dtype))
        bias = getattr(norm, "bias", None)
        if bias is not None:
            bias.div_(s.to(device=bias.device, dtype=bias.dtype))
    scale_input_columns(linears, s)


def expand_kv_scales(s: torch.Tensor, head_dim: int, n_rep: int) -> torch.Tensor:
    """Scales of v_proj's outputs [kv_heads*head_dim] -> o_proj's inputs [kv_heads*n_rep*head_dim]."""
    if n_rep == 1:
        return s
    return s.view(-1, 1, head_dim).expand(-1, n_rep, head_dim).reshape(-1)


def reduce_kv_absmax(act_absmax: torch.Tensor, head_dim: int, n_rep: int) -> torch.Tensor:
    """o_proj's input absmax [heads*head_dim] -> one value per v_proj output channel (max over the
    n_rep query heads sharing a kv head)."""
    if n_rep == 1:
        return act_absmax
    return act_absmax.view(-1, n_rep, head_dim).amax(dim=1).reshape(-1)


@torch.no_grad()
def fold_into_linear(s: torch.Tensor, prev: nn.Linear, linears: list[nn.Linear],
                     head_dim: int | None = None, n_rep: int = 1) -> None:
    """Fold 1/s into the OUTPUT rows of ``prev`` (weight rows and bias) and s into the input
    columns of ``linears`` (s has prev.out_features entries; it is expanded with
    ``expand_kv_scales`` when n_rep > 1, e.g. v_proj -> o_proj under GQA)."""
    if s.numel() != prev.out_features:
        raise ValueError(f"s has {s.numel()} entries, prev has {prev.out_features} outputs")
    prev.weight.div_(s.to(device=prev.weight.device, dtype=prev.weight.dtype).view(-1, 1))
    if prev.bias is not None:
        prev.bias.div_(s.to(device=prev.bias.device, dtype=prev.bias.dtype))
    if n_rep > 1:
        if head_dim is None:
            raise ValueError("n_rep > 1 needs head_dim")
        s = expand_kv_scales(s, head_dim, n_rep)
    scale_input_columns(linears, s)
