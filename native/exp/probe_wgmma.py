#!/usr/bin/env python3
"""A/B probe of the large-M kernel (wgmma_kernels.cu) on the LLaMA-3-8B shapes: cuBLAS, the tiled kernel
and the wgmma kernel (both token tiles), dense and zipper@3%, same run, same timing method as
scripts/bench_kernels.py (CUDA graph, rotated weight copies, median).

    python3 native/exp/probe_wgmma.py [--ms 64,256,4096] [--budget 0.03]
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
    ap.add_argument("--ms", default="64,128,256,512,1024,4096")
    ap.add_argument("--budget", type=float, default=0.03)
    ap.add_argument("--shapes", default="llama3")
    ap.add_argument("--tiles", default="64,2;128,2;128,4;128,3;256,3", help="(bt, wgs[, splitk]) CTA tiles")
    a = ap.parse_args()
    ms = [int(v) for v in a.ms.split(",")]
    tiles = [tuple(int(v) for v in t.split(",")) for t in a.tiles.split(";") if t]
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
            print(f"== {name} K={k} N={n} M={m}: cublas {t_cub * 1e6:.1f} us "
                  f"({2 * m * n * k / t_cub / 1e12:.0f} TFLOP/s)")
            for variant, b in (("dense", 0.0), ("zipper", a.budget)):
                runs = [("tiled", dict(path="tiled")), ("wgmma-auto", dict(path="wgmma"))]
                runs += [(f"wgmma{','.join(map(str, tl))}", dict(path="wgmma", wgmma=tl)) for tl in tiles]
                for label, kw in runs:
                    try:
                        t = bk.time_graph([lambda p=p, x=x, y=y, kw=kw: ops.launch(x, p, variant, out=y, **kw)
                                           for p in packs[b]])
                    except Exception as e:  # noqa: BLE001
                        print(f"  {variant:7s} {label:12s} FAILED {type(e).__name__}: {str(e)[:160]}")
                        continue
                    print(f"  {variant:7s} {label:12s} {t * 1e6:8.1f} us  {t_cub / t:5.2f}x  "
                          f"{2 * m * n * k / t / 1e12:5.0f} TFLOP/s  {ops.LAST_LAUNCH['kernels'][0]}")
            del x, y
        del w, packs
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
