"""Sequential layer-wise calibration and quantization (the GPTQ pattern).

For decoder layer i: capture its inputs (outputs of the already-quantized layers < i), optionally
migrate activation outliers into the weights (SmoothQuant), then for each group of linears sharing an
input (q/k/v, o, gate/up, down) collect input statistics with forward hooks, quantize them and put the
quantized weights in place, and finally run the quantized layer to produce the inputs of layer i+1.
Only one decoder layer lives on the accelerator at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from mosaic_exp.config import RunConfig
from mosaic_exp.formats import BitSplitWeight, QuantizedWeight
from mosaic_exp.models.adapters import ArchAdapter
from mosaic_exp.runner.capture import capture_layer0_inputs, layer_forward
from mosaic_exp.runner.layer_quant import (
    GroupQuantizer,
    finalize_global,
    install_result,
    needs_calibration,
    needs_stats,
    residual_counts,
)

log = logging.getLogger(__name__)


@dataclass
class QuantizeReport:
    weights: dict[str, QuantizedWeight | BitSplitWeight] = field(default_factory=dict)
    layer_info: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def bits_per_weight(self) -> float:
        """Storage bits over all quantized linears, weighted by their sizes."""
        tot_bits = sum(qw.bits_per_weight() * qw.out_features * qw.in_features for qw in self.weights.values())
        tot = sum(qw.out_features * qw.in_features for qw in self.weights.values())
        return tot_bits / tot if tot else float("nan")

    def residual_fraction(self) -> float:
        blocked = [qw for qw in self.weights.values() if isinstance(qw, QuantizedWeight)]
        blocks = sum(qw.grid_shape[0] * qw.grid_shape[1] for qw in blocked)
        kept = sum(qw.num_residual_blocks for qw in blocked)
        return kept / blocks if blocks else 0.0

    def high_density(self) -> float | None:
        """ZipperQuant: the share of all weights that carry high-order bits (None for other methods)."""
        split = [qw for qw in self.weights.values() if isinstance(qw, BitSplitWeight)]
        if not split:
            return None
        return sum(qw.high_nnz for qw in split) / sum(qw.out_features * qw.in_features for qw in split)


def _batches(n: int, bs: int):
    for j in range(0, n, bs):
        yield slice(j, min(j + bs, n))


def _forward_all(layer, inps, kwargs, device, bs: int, outs=None) -> None:
    """Run the layer over every calibration window (bs windows at a time); optionally keep outputs."""
    for sl in _batches(inps.shape[0], bs):
        y = layer_forward(layer, inps[sl].to(device), kwargs)
        if outs is not None:
            outs[sl] = y.to(outs.device)


def _collect_absmax(layer: nn.Module, names: list[str], inps, kwargs, device, bs) -> dict[str, torch.Tensor]:
    absmax: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_mod, args):
            x = args[0].detach().flatten(0, -2).abs().amax(dim=0).float()
            absmax[name] = torch.maximum(absmax[name], x) if name in absmax else x
        return fn

    handles = [layer.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        _forward_all(layer, inps, kwargs, device, bs)
    finally:
        for h in handles:
            h.remove()
    return absmax


def _smooth_layer(layer, adapter: ArchAdapter, alpha: float, inps, kwargs, device, bs) -> dict:
    from mosaic_exp.quant.smooth import apply_smoothing, smooth_scales

    fed = [n for _, group in adapter.smooth_groups for n in group]
    absmax = _collect_absmax(layer, fed, inps, kwargs, device, bs)
    info = {}
    for norm_name, group in adapter.smooth_groups:
        linears = [layer.get_submodule(n) for n in group]
        s = smooth_scales(absmax[group[0]], [lin.weight for lin in linears], alpha)
        apply_smoothing(s, linears, layer.get_submodule(norm_name))
        info[norm_name] = {"s_min": float(s.min()), "s_max": float(s.max())}
    return info


@torch.inference_mode()
def quantize_weights_only(model: nn.Module, adapter: ArchAdapter, cfg: RunConfig, device: torch.device,
                          progress=None) -> QuantizeReport:
    """Data-free path (RTN without smoothing): quantize every linear where it lies, layer by layer."""
    report = QuantizeReport()
    t0 = time.perf_counter()
    layers = adapter.decoder_layers(model)
    for i, layer in enumerate(layers):
        layer.to(device)
        for n, m in adapter.linears(layer).items():
            result = GroupQuantizer([n], [m.weight], cfg).quantize()[n]
            install_result(layer, n, result, cfg)
            report.weights[f"model.layers.{i}.{n}"] = result.qweight
            report.layer_info[f"model.layers.{i}.{n}"] = result.info
        if device.type != "cpu":
            layer.to("cpu")
        if progress is not None:
            progress(i + 1, len(layers))
    report.seconds = time.perf_counter() - t0
    return report


@torch.inference_mode()
def quantize_model(model: nn.Module, adapter: ArchAdapter, calib_ids: torch.Tensor, cfg: RunConfig,
                   device: torch.device, store_device: torch.device, progress=None,
                   sensitivity: dict[str, torch.Tensor] | None = None) -> QuantizeReport:
    """Quantize every decoder linear of ``model`` in place (weights replaced by their dequantized
    quantized values; activation fake-quant hooks installed when a_bits < 16).

    sensitivity: per linear (``model.layers.{i}.{name}``), the loss sensitivity of its output rows
    (:func:`mosaic_exp.residual.sensitivity.output_fisher`), weighting MosaicQuant's block scores."""
    q, r = cfg.quant, cfg.residual
    if not needs_calibration(cfg):
        return quantize_weights_only(model, adapter, cfg, device, progress)
    report = QuantizeReport()
    t0 = time.perf_counter()
    layers = adapter.decoder_layers(model)
    # Everything but the decoder layers (embeddings, rotary, final norm, head) on the accelerator.
    model.model.embed_tokens.to(device)
    if hasattr(model.model, "rotary_emb"):
        model.model.rotary_emb.to(device)
    inps, kwargs = capture_layer0_inputs(model, layers, calib_ids, device, store_device)
    outs = torch.empty_like(inps)
    bs = cfg.calib.batch_size
    global_scope = q.method == "mosaic" and r.scope == "global"
    pending: dict[str, tuple[nn.Linear, object, object]] = {}  # global budget: (module, candidates, GPTQ)
    counts = residual_counts(layers, adapter, cfg)  # per-layer budget: blocks per linear, model-exact

    for i, layer in enumerate(layers):
        layer.to(device)
        prefix = f"model.layers.{i}."
        if q.smooth_alpha > 0:
            report.layer_info[prefix + "smooth"] = _smooth_layer(layer, adapter, q.smooth_alpha, inps, kwargs,
                                                                 device, bs)
        for group in adapter.linear_groups:
            mods = {n: layer.get_submodule(n) for n in group}
            rw = None if sensitivity is None else [sensitivity[prefix + n] for n in mods]
            gq = GroupQuantizer(list(mods), [m.weight for m in mods.values()], cfg, row_weights=rw,
                                counts=None if counts is None else [counts[prefix + n] for n in mods])
            if needs_stats(cfg):  # the group's linears share their input: hook the first one
                handle = next(iter(mods.values())).register_forward_pre_hook(gq.hook)
                try:
                    _forward_all(layer, inps, kwargs, device, bs)
                finally:
                    handle.remove()
            results = gq.quantize()
            for n, m in mods.items():
                result = results[n]
                report.layer_info[prefix + n] = result.info
                if sensitivity is not None:  # the loss weight of this linear's output error
                    result.info["fisher_mean"] = float(sensitivity[prefix + n].mean())
                install_result(layer, n, result, cfg)
                if global_scope:
                    pending[prefix + n] = (m, result.candidates, result.gptq)
                else:
                    report.weights[prefix + n] = result.qweight
        _forward_all(layer, inps, kwargs, device, bs, outs=outs)
        if device.type != "cpu":
            layer.to("cpu")  # one decoder layer on the accelerator at a time
        inps, outs = outs, inps
        if progress is not None:
            progress(i + 1, len(layers))
        log.info("layer %d/%d quantized (%.1fs)", i + 1, len(layers), time.perf_counter() - t0)

    if global_scope:
        # Inputs of later layers were computed with base-only upstream weights (documented approximation);
        # in-loop candidates get their group's second GPTQ pass here (H parked on the CPU until now).
        finals = finalize_global({k: c for k, (_, c, _) in pending.items()}, r.budget,
                                 gptqs={k: g for k, (_, _, g) in pending.items()}, device=device,
                                 rank=r.global_rank)
        for name, (mod, _, _) in pending.items():
            qw, info = finals[name]
            report.weights[name] = qw
            report.layer_info[name].update(info)
            mod.weight.data.copy_(qw.dequantize().to(mod.weight.device, mod.weight.dtype))
    del inps, outs
    report.seconds = time.perf_counter() - t0
    return report
