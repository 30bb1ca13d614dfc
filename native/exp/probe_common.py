"""The loop the kernel A/B probes share: for each shape of a family and each M, cuBLAS bf16 and a list
of forced ``ops.launch`` settings, dense and zipper at one budget, timed the way scripts/bench_kernels.py
times (CUDA graph over weight copies rotated past L2, median), in one run."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_kernels as bk

from mosaic_exp.kernels import ops
from mosaic_exp.kernels.packing import pack_quantized


def run(shapes: str, ms: list[int], budget: float, runs: list[tuple[str, dict]], label_width: int = 12) -> None:
    """Print one line per (shape, M, variant, run): time, speed-up over cuBLAS, TFLOP/s, kernel name.
    ``runs`` = [(label, ops.launch keyword arguments)]; a run that raises prints FAILED and the rest go on."""
    print(f"device {torch.cuda.get_device_name()}  budget {budget}")
    for name, k, n in bk.SHAPES[shapes]:
        w = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(bk.copies_for(n * k * 2))]
        packs = {b: bk.rotated_packs(pack_quantized(bk.random_qw_gpu(n, k, b, seed=7), torch.bfloat16, "cuda"))
                 for b in (0.0, budget)}
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            flops = 2 * m * n * k
            t_cub = bk.time_graph([lambda w=w_, x=x: torch.nn.functional.linear(x, w) for w_ in w])
            print(f"== {name} K={k} N={n} M={m}: cublas {t_cub * 1e6:.1f} us ({flops / t_cub / 1e12:.0f} TFLOP/s)")
            for variant, b in (("dense", 0.0), ("zipper", budget)):
                for label, kw in runs:
                    try:
                        t = bk.time_graph([lambda p=p, x=x, y=y, kw=kw, v=variant: ops.launch(x, p, v, out=y, **kw)
                                           for p in packs[b]])
                    except Exception as e:  # noqa: BLE001
                        print(f"  {variant:7s} {label:{label_width}s} FAILED {type(e).__name__}: {str(e)[:160]}")
                        continue
                    print(f"  {variant:7s} {label:{label_width}s} {t * 1e6:8.1f} us  {t_cub / t:5.2f}x  "
                          f"{flops / t / 1e12:5.0f} TFLOP/s  {ops.LAST_LAUNCH['kernels'][0]}")
            del x, y
        del w, packs
        torch.cuda.empty_cache()
