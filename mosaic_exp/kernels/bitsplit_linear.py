"""BitSplitLinear: ZipperQuant's linear layer, the dense low-order bits and the sparse high-order bits run apart.

    y = Q_a(x) . W_lo^T   +   x . W_hi^T   (+ bias)
        dense 4-bit part: a QuantLinear (``low_variant``: reference, or the native dense W4A16 kernel), on x's
        device, with the activations fake-quantized to ``a_bits`` (the paper's low-precision GPU part);
        sparse high-order part: full-precision activations, run by ``high_kernel``:
          cpu_lut     the CPU lookup-table kernel (:mod:`mosaic_exp.kernels.cpu_lut`)
          cpu_direct  the same CPU kernel multiplying the codes (the baseline the table is measured against)
          reference   a dense float32 W_hi on x's device (fast accuracy runs; no CPU involved; at A16 with a
                      reference dense part, one matmul of W_lo + W_hi)
On a CUDA input with a CPU high kernel the two halves overlap (:class:`HostOffload`): x is copied to the host on a
side stream into a pinned staging buffer, a persistent worker thread waits for that copy and runs the CPU kernel
(which releases the GIL) while the main thread launches the dense part, and the CPU result goes back through a
second pinned buffer and is added on the GPU. Layers share one offload (one worker, one pair of buffers grown to
the largest M seen): forwards are issued from one thread, one after the other, as a model runs them.
``last_kernel`` names both kernels that ran; an unavailable kernel raises, there is no fallback.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

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
        off = host_offload(x.device)
        m = x.numel() // self.in_features
        x_host, y_host = off.stage(x.reshape(m, self.in_features), self.out_features)
        task = off.worker.submit(off.run_high, self._high_cpu, x_host, y_host)
        y_lo = self.low(xq)  # launched on the main stream while the worker computes
        task.result()
        y_hi = off.to_device(y_host)
        return torch.add(y_lo.reshape(m, self.out_features), y_hi).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, a_bits={self.a_bits}, "
                f"high_kernel={self.high_kernel}, high_density={self.weight_split.high_density:.4f}")


class HostOffload:
    """The overlapped forward's shared state on one CUDA device: a side stream for the device-to-host copy, one
    worker thread for the CPU kernel and two pinned staging buffers (x out, y back) reused across calls.

    Reuse is safe because every step waits for the one that last used a buffer: the worker waits for x's copy
    (``copied``) before reading x_host and for the previous result's host-to-device copy (``returned``) before
    writing y_host; the next x copy is issued only after the previous worker task finished (``task.result()``)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.side = torch.cuda.Stream(device=device)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mosaic-cpu-high")
        self.copied = torch.cuda.Event()
        self.returned = torch.cuda.Event()
        self.returned.record(torch.cuda.current_stream(device))
        self._buf: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
        b = self._buf.get(name)
        if b is None or b.numel() < numel or b.dtype != dtype:
            # a grown buffer is new memory; the old one is held by the caching host allocator until its pending
            # copies finish
            b = torch.empty(numel, dtype=dtype, pin_memory=True)
            self._buf[name] = b
        return b

    def stage(self, x2: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Issue x2 [M, K]'s copy to the host on the side stream; return the staging views x_host [M, K] and
        y_host [M, n] (float32)."""
        m, k = x2.shape
        x_host = self._buffer("x", m * k, x2.dtype)[: m * k].view(m, k)
        y_host = self._buffer("y", m * n, torch.float32)[: m * n].view(m, n)
        main = torch.cuda.current_stream(self.device)
        self.side.wait_stream(main)  # x is ready
        with torch.cuda.stream(self.side):
            x_host.copy_(x2, non_blocking=True)
            self.copied.record(self.side)
        return x_host, y_host

    def run_high(self, high, x_host: torch.Tensor, y_host: torch.Tensor) -> None:
        """(worker thread) y_host = high(x_host) once x has arrived and y_host's previous contents have left."""
        self.copied.synchronize()
        self.returned.synchronize()
        y_host.copy_(high(x_host))

    def to_device(self, y_host: torch.Tensor) -> torch.Tensor:
        main = torch.cuda.current_stream(self.device)
        y = torch.empty(y_host.shape, dtype=y_host.dtype, device=self.device)
        y.copy_(y_host, non_blocking=True)
        self.returned.record(main)
        return y


@functools.cache
def host_offload(device: torch.device) -> HostOffload:
    """One offload per CUDA device, made on first use (no thread or stream at import)."""
    return HostOffload(device)
