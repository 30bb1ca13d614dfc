"""BitSplitLinear: ZipperQuant's linear layer, the dense low-order bits and the sparse high-order bits run apart.

    y = Q_a(x) . W_lo^T   +   x . W_hi^T   (+ bias)
        dense 4-bit part: a QuantLinear (``low_variant``: reference, or the native dense W4A16 kernel), on x's
        device, with the activations fake-quantized to ``a_bits`` (the paper's low-precision GPU part);
        sparse high-order part: full-precision activations, run by ``high_kernel``:
          cpu_lut     the CPU lookup-table kernel (:mod:`mosaic_exp.kernels.cpu_lut`)
          cpu_direct  the same CPU kernel multiplying the codes (the baseline the table is measured against)
          reference   a dense float32 W_hi on x's device (fast accuracy runs; no CPU involved; at A16 with a
                      reference dense part, one matmul of W_lo + W_hi)
On a CUDA input with a CPU high kernel the two halves overlap: x is copied to the host on a side stream, the GPU
runs the dense part while the CPU runs the sparse part, and the CPU result is added on the GPU.
``last_kernel`` names both kernels that ran; an unavailable kernel raises, there is no fallback.
"""

from __future__ import annotations

import torch
from torch import nn

from mosaic_exp.formats import BitSplitWeight
from mosaic_exp.kernels.cpu_lut import KERNEL_NAME, PackedHigh, high_bits_mm, load_cpu_lut
from mosaic_exp.kernels.quant_linear import QuantLinear
from mosaic_exp.quant.act import fake_quantize_activation

HIGH_KERNELS = ("reference", "cpu_lut", "cpu_direct")


class BitSplitLinear(nn.Module):
    def __init__(self, w: BitSplitWeight, bias: torch.Tensor | None = None, *, a_bits: int = 16,
                 a_clip_ratio: float = 1.0, low_variant: str = "reference", high_kernel: str = "reference",
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        super().__init__()
        if high_kernel not in HIGH_KERNELS:
            raise ValueError(f"high_kernel must be one of {HIGH_KERNELS}, got {high_kernel!r}")
        if high_kernel != "reference":
            load_cpu_lut()  # raises CpuKernelUnavailable naming the build command before any work
        fake_quantize_activation(torch.zeros(1), a_bits, a_clip_ratio)  # validates a_bits / clip
        self.in_features, self.out_features = w.in_features, w.out_features
        self.a_bits, self.a_clip_ratio = a_bits, a_clip_ratio
        self.high_kernel = high_kernel
        self.weight_split = w.to("cpu")
        self.low = QuantLinear.from_quantized(w.low, variant=low_variant, dtype=dtype, device=device)
        self.packed_high = PackedHigh.from_weight(w)
        self._w_ref: dict = {}  # reference high kernel: a dense W_hi (or W_q at A16), one device and dtype
        self.last_kernel: str | None = None
        self._side = None  # the host-copy stream of the overlapped forward
        self.register_buffer("bias", None if bias is None else bias.detach().to(device=device, dtype=dtype))

    def _apply(self, fn, recurse=True):
        # the cached dense references are plain tensors: drop them on any move (the layer-wise runner moves each
        # layer back to the CPU; a stale GPU copy would stay alive)
        self._w_ref.clear()
        return super()._apply(fn, recurse)

    def use_low_variant(self, variant: str, dtype: torch.dtype) -> None:
        """Run the dense part with another QuantLinear variant (e.g. the native ``dense`` kernel)."""
        device = self.low._device() if variant == "reference" else "cuda"
        self.low = QuantLinear.from_quantized(self.weight_split.low, variant=variant, dtype=dtype, device=device)
        if self.bias is not None:
            self.bias = self.bias.to(device=device, dtype=dtype)

    def _dense_reference(self, what: str, x: torch.Tensor) -> torch.Tensor:
        """x . W^T with W = W_hi ("w_hi") or W_q = W_lo + W_hi ("w_q") dense, cached once (one device, one dtype):
        float32 on the CPU, x's dtype on a GPU (as QuantLinear's reference variant; an fp32 copy of an 8B model's
        weights would not fit beside it)."""
        dtype = torch.float32 if x.device.type == "cpu" else x.dtype
        key = (what, str(x.device), dtype)
        if key not in self._w_ref:
            self._w_ref.clear()
            w = self.weight_split.high_dense() if what == "w_hi" else self.weight_split.dequantize()
            self._w_ref[key] = w.to(x.device, dtype)
        return torch.nn.functional.linear(x.to(dtype), self._w_ref[key]).float()

    def _high_cpu(self, x_cpu: torch.Tensor) -> torch.Tensor:
        lut = self.high_kernel == "cpu_lut"
        return high_bits_mm(x_cpu, self.packed_high, lut=lut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = fake_quantize_activation(x, self.a_bits, self.a_clip_ratio)
        if self.high_kernel == "reference" and self.a_bits == 16 and self.low.variant == "reference":
            y = self._dense_reference("w_q", x)  # both halves see x: one matmul of W_lo + W_hi
        elif self.high_kernel == "reference":
            y = self.low(xq).float() + self._dense_reference("w_hi", x)
        elif x.device.type == "cuda":
            y = self._forward_overlapped(x, xq)
        else:
            y = self.low(xq).float() + self._high_cpu(x)
        self.last_kernel = f"low: {self.low.last_kernel}; high: " + (
            "reference (dense W_hi)" if self.high_kernel == "reference" else
            f"{KERNEL_NAME} ({'lookup table' if self.high_kernel == 'cpu_lut' else 'direct'}, CPU)")
        y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y

    def _forward_overlapped(self, x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
        """GPU dense part and CPU sparse part at the same time (see the module docstring)."""
        main = torch.cuda.current_stream(x.device)
        if self._side is None or self._side.device != x.device:
            self._side = torch.cuda.Stream(device=x.device)  # one per module: created once, not per call
        side = self._side
        side.wait_stream(main)  # x is ready
        with torch.cuda.stream(side):
            x_host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
            x_host.copy_(x, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(side)
        y_lo = self.low(xq)  # launched on the main stream; runs while the CPU works
        copied.synchronize()
        y_hi = self._high_cpu(x_host).pin_memory().to(x.device, non_blocking=True)
        return y_lo.float() + y_hi

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, a_bits={self.a_bits}, "
                f"high_kernel={self.high_kernel}, high_density={self.weight_split.high_density:.4f}")
