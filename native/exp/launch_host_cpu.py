#!/usr/bin/env python3
"""Host-side cost of ops.launch without a GPU: the Python path that picks and launches a kernel.

    python scripts/build_native.py --reuse-objects --no-cpu   (the native module is loaded for its plan queries)
    python native/exp/launch_host_cpu.py

The native module's launches (gemm / gemv / wgmma) and its device queries (occupancy, registers) are stubbed, and
so are the CUDA queries (SM count, device name, capability, stream): what is timed is everything ops.launch does
in Python for one call, on LLaMA-3 o and down shapes at M = 1 / 16 / 64 / 128, dense and zipper @3 % (medians of
200 calls after 5), then a cProfile of 300 zipper calls at M = 16. Prints command, CPU, date and the results.
"""

from __future__ import annotations

import cProfile
import datetime as dt
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mosaic_exp.kernels import ops
from mosaic_exp.kernels.packing import pack_quantized
from mosaic_exp.kernels.testing import random_quantized
from mosaic_exp.logging.environment import result_commit


class StubNative:
    """The real module's plan queries; launches and device queries stubbed."""

    def __init__(self, real):
        self.real = real

    def __getattr__(self, name):
        if name in ("gemm", "gemv", "wgmma"):
            return lambda *a, **k: None
        if name == "max_active_clusters":
            return lambda *a: 16
        if name in ("kernel_regs", "wgmma_regs"):
            return lambda *a: 128
        if name == "gemv_regs":
            return lambda *a: 64
        return getattr(self.real, name)


class _Stream:
    cuda_stream = 0


def main() -> int:
    nat = StubNative(ops.load_native())
    ops.load_native = lambda: nat
    ops._sm_count = lambda d: 132
    ops._device_name = lambda d: "NVIDIA H100 80GB HBM3"
    ops.check_inputs = lambda x, n, k, dt, dev=None: x.numel() // x.shape[-1]
    torch.cuda.current_stream = lambda d=None: _Stream()
    torch.cuda.get_device_capability = lambda d=None: (9, 0)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    print(f"command: python {' '.join(sys.argv)}\ncpu: {cpu}\ndate: {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%MZ}, "
          f"commit {result_commit(ROOT)}\n\n| shape | variant | M | host us per launch | plan |\n|---|---|---|---|---|")
    for shape, (k, n) in {"o": (4096, 4096), "down": (14336, 4096)}.items():
        for budget in (0.0, 0.03):
            p = pack_quantized(random_quantized(n, k, group_size=128, budget=budget, seed=0), torch.float16)
            variant = "zipper" if budget else "dense"
            for m in (1, 16, 64, 128):
                x = torch.randn(m, k, dtype=torch.float16)
                for _ in range(5):
                    ops.launch(x, p, variant)
                t = []
                for _ in range(200):
                    t0 = time.perf_counter()
                    ops.launch(x, p, variant)
                    t.append(time.perf_counter() - t0)
                print(f"| {shape} | {variant} | {m} | {statistics.median(t) * 1e6:.1f} | "
                      f"{' + '.join(ops.LAST_LAUNCH.get('kernels', []))} |")
    p = pack_quantized(random_quantized(4096, 4096, group_size=128, budget=0.03, seed=0), torch.float16)
    x = torch.randn(16, 4096, dtype=torch.float16)
    prof = cProfile.Profile()
    prof.runcall(lambda: [ops.launch(x, p, "zipper") for _ in range(300)])
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    print("\ncProfile, 300 zipper launches, o, M = 16:\n" + buf.getvalue().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
