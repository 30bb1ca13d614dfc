"""Capture the inputs of the first decoder layer (the GPTQ "Catcher" pattern)."""

from __future__ import annotations

import torch
from torch import nn


class _Stop(Exception):
    pass


class _Catcher(nn.Module):
    def __init__(self, layer: nn.Module, store: list, kwargs_box: dict):
        super().__init__()
        self.layer = layer
        self.store = store
        self.kwargs_box = kwargs_box

    def forward(self, hidden_states, *args, **kwargs):
        self.store.append(hidden_states.detach())
        if not self.kwargs_box:
            self.kwargs_box.update(kwargs)
        raise _Stop


@torch.inference_mode()
def capture_layer0_inputs(model: nn.Module, layers: nn.ModuleList, calib_ids: torch.Tensor,
                          device: torch.device, store_device: torch.device) -> tuple[torch.Tensor, dict]:
    """Run the embeddings for every calibration window; return (inputs [ns, L, H] on store_device,
    the keyword arguments the decoder layers receive: attention mask, position embeddings, ...)."""
    store: list[torch.Tensor] = []
    kwargs: dict = {}
    first = layers[0]
    layers[0] = _Catcher(first, store, kwargs)
    try:
        for i in range(calib_ids.shape[0]):
            try:
                model(calib_ids[i : i + 1].to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        layers[0] = first
    inps = torch.cat([s.to(store_device) for s in store], dim=0)
    return inps, kwargs


def layer_forward(layer: nn.Module, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out
