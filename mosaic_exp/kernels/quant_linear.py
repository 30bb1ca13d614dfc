"""QuantLinear: an nn.Module holding a packed W4 (+ residual) weight and a chosen kernel.

Variants (registry ``VARIANTS``):
  reference  dequantize once (float32, cached per device/dtype) and F.linear; runs on CPU
  dense      native base-only kernel (refuses a weight that has residual blocks)
  separate   native dense kernel + residual-only kernel accumulating into Y
  zipper     native single kernel, residual added to the base fragment before the MMA
An unknown or unavailable variant raises :class:`VariantUnavailable` naming it and why; there is
no silent fallback. ``last_kernel`` says which kernel(s) the last forward ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mosaic_exp.formats import QuantizedWeight
from mosaic_exp.kernels.native import NativeUnavailable, load_native
from mosaic_exp.kernels.packing import PackedW4, pack_quantized


class VariantUnavailable(RuntimeError):
    """The requested kernel variant does not exist or cannot run here."""


@dataclass(frozen=True)
class KernelSpec:
    name: str
    native: bool
    description: str


VARIANTS: dict[str, KernelSpec] = {
    "reference": KernelSpec("reference", False, "dequantize once + F.linear (CPU or GPU)"),
    "dense": KernelSpec("dense", True, "native W4A16 kernel, base weight only"),
    "separate": KernelSpec("separate", True, "native dense kernel + sparse residual kernel"),
    "zipper": KernelSpec("zipper", True, "native single kernel, residual fused before the MMA"),
}


def check_variant(variant: str, device: torch.device | str | None = None) -> KernelSpec:
    """Return the spec of ``variant`` or raise VariantUnavailable with the reason."""
    if variant not in VARIANTS:
        raise VariantUnavailable(f"unknown kernel variant {variant!r}; known: {sorted(VARIANTS)}")
    spec = VARIANTS[variant]
    if spec.native:
        dev = torch.device(device) if device is not None else None
        if not torch.cuda.is_available():
            raise VariantUnavailable(f"kernel variant {variant!r} unavailable: no CUDA device")
        if dev is not None and dev.type != "cuda":
            raise VariantUnavailable(f"kernel variant {variant!r} unavailable on device {dev}: needs CUDA")
        try:
            load_native()
        except NativeUnavailable as e:
            raise VariantUnavailable(f"kernel variant {variant!r} unavailable: {e}") from e
        import mosaic_exp.kernels.ops  # noqa: F401  (registers the torch.library ops)
    return spec


def available_variants(device: torch.device | str | None = None) -> dict[str, str]:
    """{variant: 'ok' or the reason it is unavailable}."""
    out = {}
    for v in VARIANTS:
        try:
            check_variant(v, device)
            out[v] = "ok"
        except VariantUnavailable as e:
            out[v] = str(e)
    return out


class QuantLinear(nn.Module):
    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None = None, variant: str = "reference",
                 dtype: torch.dtype = torch.float16, device: torch.device | str | None = None):
        super().__init__()
        if device is None:
            device = "cuda" if VARIANTS.get(variant, VARIANTS["reference"]).native else qw.base_scales.device
        device = torch.device(device)
        self.spec = check_variant(variant, device)
        self.variant = variant
        self.in_features, self.out_features = qw.in_features, qw.out_features
        self.dtype = dtype
        self.last_kernel: str | None = None
        self.last_launch: tuple[str, ...] = ()  # native variants: ops.LAST_LAUNCH's kernel names of the last forward
        self.qw: QuantizedWeight | None = None
        self.packed: PackedW4 | None = None
        if self.spec.native:
            if dtype not in (torch.float16, torch.bfloat16):
                raise VariantUnavailable(f"kernel variant {variant!r} needs dtype float16/bfloat16, got {dtype}")
            if variant == "dense" and qw.num_residual_blocks:
                raise VariantUnavailable(f"kernel variant 'dense' ignores the {qw.num_residual_blocks} residual "
                                         f"blocks of this weight (n={qw.out_features}, k={qw.in_features}); "
                                         f"use 'zipper' or 'separate'")
            self.packed = pack_quantized(qw, dtype, device)
        else:
            self.qw = qw.to(device)
        self._w_cache: dict = {}
        self.register_buffer("bias", None if bias is None else bias.detach().to(device=device, dtype=dtype))

    @classmethod
    def from_quantized(cls, qw: QuantizedWeight, bias: torch.Tensor | None = None, variant: str = "reference",
                       dtype: torch.dtype = torch.float16, device: torch.device | str | None = None) -> QuantLinear:
        return cls(qw, bias=bias, variant=variant, dtype=dtype, device=device)

    @property
    def kernel_name(self) -> str | None:
        return self.last_kernel

    def _apply(self, fn, recurse=True):
        # Move packed/cached tensors with the module (device moves only; dtypes are fixed by packing).
        super()._apply(fn, recurse)
        probe = fn(torch.zeros(1, dtype=self.dtype, device=self._device()))
        if probe.device != self._device():
            if self.packed is not None:
                self.packed = self.packed.to(probe.device)
            if self.qw is not None:
                self.qw = self.qw.to(probe.device)
            self._w_cache.clear()
        return self

    def _device(self) -> torch.device:
        if self.packed is not None:
            return self.packed.qweight.device
        return self.qw.base_scales.device

    def reference_weight(self, device, dtype) -> torch.Tensor:
        key = (str(device), dtype)
        if key not in self._w_cache:
            self._w_cache.clear()
            self._w_cache[key] = self.qw.to(device).dequantize().to(dtype)
        return self._w_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "reference":
            if x.device.type == "cpu" and x.dtype in (torch.float16, torch.bfloat16):
                y = F.linear(x.float(), self.reference_weight(x.device, torch.float32)).to(x.dtype)
            else:
                y = F.linear(x, self.reference_weight(x.device, x.dtype))
            self.last_kernel = "reference"
        else:
            from mosaic_exp.kernels import ops

            y = ops.call_op(x, self.packed, self.variant)
            self.last_kernel = self.variant
            self.last_launch = tuple(ops.LAST_LAUNCH.get("kernels", ()))  # the launch plan(s) that ran
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, variant={self.variant}, "
                f"dtype={self.dtype}")
