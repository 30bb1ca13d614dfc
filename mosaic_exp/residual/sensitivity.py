"""Output sensitivity of every decoder linear: how much the model's loss cares about each output channel.

The Delta-Hessian score measures a block's effect on its layer's output error ||Delta Y||^2. Layers do not
matter equally to the loss: an error in a late down_proj whose output is dwarfed by the residual stream
costs little; one in an early attention projection costs much. A second-order expansion of the loss
around the full-precision model, with the empirical Fisher as its Hessian (diagonal over output channels,
tokens treated independently), turns output error into loss:

    Delta L  ~=  1/2 sum_i F_i sum_t Delta y_ti^2,      F_i = mean_t g_ti^2,  g = dL/dy

and sum_t Delta y_ti^2 = (T/2) Delta w_i H Delta w_i^T, so weighting row i of the Delta-Hessian score by F_i
gives a score in loss units, comparable across layers (what a global budget needs) and across the output
rows of one layer. F is measured once on the unquantized model (one forward + backward per calibration
window); smoothing does not change a linear's output, so F holds for the smoothed weights too.
"""

from __future__ import annotations

import torch
from torch import nn

from mosaic_exp.models.adapters import ArchAdapter


def output_fisher(model: nn.Module, adapter: ArchAdapter, calib_ids: torch.Tensor, device: torch.device | str,
                  windows: int | None = None, batch_size: int = 1) -> dict[str, torch.Tensor]:
    """F_i = (1/W) sum_windows sum_t (dL_w/dy_ti)^2 for every decoder linear, float32 [N] on the CPU.

    L_w is the mean next-token cross-entropy of window w (the perplexity's loss); summing its squared
    gradient over the window's tokens and averaging over windows keeps every layer in the same units.
    Keys are ``model.layers.{i}.{name}`` (the names of the quantization report). The whole model runs
    on ``device`` for this pass; its parameters get no gradients.
    """
    if calib_ids.dim() != 2 or calib_ids.shape[0] == 0:
        raise ValueError(f"calib_ids must be [windows, seqlen] with at least one window, got {tuple(calib_ids.shape)}")
    n = calib_ids.shape[0] if windows is None else min(int(windows), calib_ids.shape[0])
    if n <= 0:
        raise ValueError(f"windows={windows} must be positive")
    if torch.device(device).type == "cuda":  # fail before moving 16+ GB, naming the way out
        need = sum(p.numel() * p.element_size() for p in model.parameters() if p.device.type != "cuda")
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        if need > free:
            raise RuntimeError(f"residual.sensitivity=fisher runs the whole model on {device}: the weights still to move take "
                               f"{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB are free; use "
                               f"residual.sensitivity=none (layer-output scores) on this GPU")
    acc: dict[str, torch.Tensor] = {}
    handles = []

    def forward_hook(name):
        def on_output(_mod, _args, out):
            if out.requires_grad:
                def on_grad(g):
                    s = g.detach().float().pow(2).flatten(0, -2).sum(dim=0)
                    acc[name] = acc[name] + s if name in acc else s
                out.register_hook(on_grad)
        return on_output

    for i, layer in enumerate(adapter.decoder_layers(model)):
        for name, mod in adapter.linears(layer).items():
            handles.append(mod.register_forward_hook(forward_hook(f"model.layers.{i}.{name}")))
    was_training = model.training
    requires = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    model.to(device)
    embed = model.get_input_embeddings()
    try:
        with torch.enable_grad():
            for j in range(0, n, batch_size):
                ids = calib_ids[j:min(j + batch_size, n)].to(device)
                emb = embed(ids).detach().requires_grad_(True)  # gradients flow through activations only
                logits = model(inputs_embeds=emb, use_cache=False).logits[:, :-1].float()
                per_window = nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
                ).view(ids.shape[0], -1).mean(dim=1)
                per_window.sum().backward()  # sum of per-window means: each window's own gradient
    finally:
        for h in handles:
            h.remove()
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)
    return {k: (v / n).cpu() for k, v in acc.items()}
