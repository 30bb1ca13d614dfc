#!/usr/bin/env python3
"""A/B probe of the small-M kernel (gemv_kernels.cu) on the LLaMA-3-8B shapes: the tiled kernel,
the planner's gemv choice and forced (warps, kparts, splitk) plans, dense and zipper@3%, same run,
same timing method as scripts/bench_kernels.py (CUDA graph, rotated weight copies, median).

    python3 native/exp/probe_gemv.py [--ms 1,16] [--plans 16,4,2;8,2,4] [--budget 0.03]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_kernels as bk  # noqa: E402

from mosaic_exp.kernels import ops  # noqa: E402
from mosaic_exp.kernels.packing import pack_quantized  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="1,16")
    ap.add_argument("--plans", default="16,4,1;16,4,2;16,4,4;8,2,1;8,2,2;8,2,4;8,1,4;16,2,2")
    ap.add_argument("--budget", type=float, default=0.03)
    ap.add_argument("--shapes", default="llama3")
    a = ap.parse_args()
    ms = [int(v) for v in a.ms.split(",")]
    plans = [tuple(int(v) for v in s.split(",")) for s in a.plans.split(";") if s]
    print(f"device {torch.cuda.get_device_name()}  budget {a.budget}")
    for name, k, n in bk.SHAPES[a.shapes]:
        w = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(bk.copies_for(n * k * 2))]
        packs = {}
        for b in (0.0, a.budget):
            p = pack_quantized(bk.random_qw_gpu(n, k, b, seed=7), torch.bfloat16, "cuda")
            packs[b] = [p] + [dataclasses.replace(p, **{kk: vv.clone() for kk, vv in p.tensors().items()})
                              for _ in range(bk.copies_for(p.nbytes()) - 1)]
        for m in ms:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            t_cub = bk.time_graph([lambda w=w_, x=x: torch.nn.functional.linear(x, w) for w_ in w])
            print(f"== {name} K={k} N={n} M={m}: cublas {t_cub * 1e6:.1f} us")
            for variant, b in (("dense", 0.0), ("zipper", a.budget)):
                runs = [("tiled", dict(path="tiled")), ("gemv-auto", dict(path="gemv"))]
                runs += [(f"gemv{pl}", dict(path="gemv", gemv=pl)) for pl in plans]
                for label, kw in runs:
                    try:
                        t = bk.time_graph([lambda p=p, x=x, y=y, kw=kw: ops.launch(x, p, variant, out=y, **kw)
                                           for p in packs[b]])
                    except Exception as e:  # noqa: BLE001
                        print(f"  {variant:7s} {label:14s} FAILED {type(e).__name__}: {str(e)[:120]}")
                        continue
                    print(f"  {variant:7s} {label:14s} {t * 1e6:7.1f} us  {t_cub / t:5.2f}x  "
                          f"{ops.LAST_LAUNCH['kernels'][0]}")
            del x, y
        del w, packs
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
