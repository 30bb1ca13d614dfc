"""Put QuantLinear modules (a chosen kernel variant) in place of a model's quantized nn.Linear layers."""

from __future__ import annotations

import logging

import torch
from torch import nn

from mosaic_exp.formats import QuantizedWeight
from mosaic_exp.kernels.quant_linear import VARIANTS, QuantLinear, check_variant

log = logging.getLogger(__name__)


def check_kernel_config(variant: str, w_bits: int, a_bits: int, method: str, device) -> None:
    """Fail before any expensive work when a variant cannot run this configuration here."""
    spec = check_variant(variant, device)  # raises VariantUnavailable naming the variant and why
    if not spec.native:
        return
    if method == "fp16":
        raise ValueError(f"kernel.variant={variant!r} needs a quantized model; quant.method='fp16' has none")
    if method == "zipperquant":  # the native kernel runs the dense 4-bit low part; w_bits is the split's total
        if variant != "dense" or a_bits != 16:
            raise ValueError(f"kernel.variant={variant!r} with quant.method='zipperquant' (a_bits={a_bits}); "
                             f"allowed: reference, or dense with quant.a_bits=16 (a W4A16 kernel; ZipperQuant "
                             f"has no residual blocks for zipper / separate)")
        return
    if w_bits != 4 or a_bits != 16:
        raise ValueError(f"kernel.variant={variant!r} is a W4A16 kernel; got quant.w_bits={w_bits}, "
                         f"quant.a_bits={a_bits} (use kernel=reference for other widths)")


def swap_quant_linears(model: nn.Module, weights: dict[str, QuantizedWeight], variant: str,
                       dtype: torch.dtype | None = None) -> str:
    """Replace each linear named in ``weights`` by a QuantLinear running ``variant``.

    Returns a description of what runs (the kernel name each QuantLinear reports after a forward).
    """
    spec = VARIANTS[variant]
    for name, qw in weights.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        ql = QuantLinear.from_quantized(qw, bias=None if old.bias is None else old.bias.detach(), variant=variant,
                                        dtype=dtype or old.weight.dtype)
        # Activation fake-quant pre-hooks (a_bits < 16) only exist for the reference path.
        setattr(parent, child, ql.to(old.weight.device))
    return f"{variant}: {spec.description} ({len(weights)} linears)"


def fuse_shared_input_linears(model: nn.Module, weights: dict[str, QuantizedWeight], adapter, variant: str,
                              dtype: torch.dtype) -> int:
    """Run each decoder layer's linears that share an input (the adapter's linear groups of two or more: q / k / v,
    gate / up) as one QuantLinear over their stacked weight (:mod:`mosaic_exp.kernels.fused_linear`). Call after
    :func:`swap_quant_linears`: the members' QuantLinears are replaced. Groups with a bias, or whose weights
    cannot be stacked (residual blocks straddling two members), stay unfused. Returns the number of fused groups."""
    from mosaic_exp.kernels.fused_linear import FusedSlice, SharedInputLinears

    fused = 0
    for i in range(len(adapter.decoder_layers(model))):
        for group in adapter.linear_groups:
            names = [f"model.layers.{i}.{n}" for n in group]  # the quantization report's names
            if len(group) < 2 or not all(n in weights for n in names):
                continue
            mods = [model.get_submodule(n) for n in names]
            if any(getattr(m, "bias", None) is not None for m in mods):
                continue
            try:
                g = SharedInputLinears([weights[n] for n in names], variant=variant, dtype=dtype,
                                       device=mods[0]._device() if isinstance(mods[0], QuantLinear) else None)
            except ValueError as e:  # e.g. a member's out_features not a multiple of the residual block height
                log.warning("not fused: %s (%s)", ", ".join(names), e)
                continue
            parent_name = names[0].rpartition(".")[0]
            parent = model.get_submodule(parent_name)
            setattr(parent, "fused_" + "_".join(n.rpartition(".")[2] for n in group), g)
            for j, n in enumerate(names):
                pn, _, child = n.rpartition(".")
                setattr(model.get_submodule(pn), child, FusedSlice(g, j))
            fused += 1
    return fused


def swap_bitsplit_low(model: nn.Module, weights: dict, variant: str, dtype: torch.dtype, high_kernel: str) -> str:
    """ZipperQuant: the BitSplitLinear modules stay; their dense low part runs ``variant``."""
    from mosaic_exp.kernels.bitsplit_linear import BitSplitLinear

    for name in weights:
        mod = model.get_submodule(name)
        if not isinstance(mod, BitSplitLinear):
            raise TypeError(f"{name} is a {type(mod).__name__}, expected the BitSplitLinear the quantizer put there")
        if variant != "reference":
            mod.use_low_variant(variant, dtype)
    low = VARIANTS[variant].description
    return f"bit-split: low part {variant} ({low}); high part {high_kernel} ({len(weights)} linears)"
