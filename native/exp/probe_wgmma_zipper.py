"""Probe (device): where the wgmma zipper's overhead over the dense kernel at M >= 128 comes from.

The benchmark shows the zipper @3 % +16-20 % over dense at M = 128-256 but @10 % only 1-3 % more than @3 %: a
cost that barely grows with the residual. Per LLaMA-3 shape and M, on the default routes (wgmma from M = 64 where
a tile fills the GPU), bf16, CUDA graphs over weight copies rotated past L2:
  dense / z3 / z3nobits (the 3 % weights with every residual bit cleared: the zipper kernel's fixed cost) / z10
  python3 native/exp/probe_wgmma_zipper.py --ms 128,256,1024 [--shapes o,down]
  python3 native/exp/probe_wgmma_zipper.py --ncu o,256      (one launch of each variant, for ncu)
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "native", "exp"))
from probe_tiled_zipper import SHAPES, cases, launch_once, probe_header, weights

from mosaic_exp.kernels import ops
from scripts.bench_kernels import time_graph


def runs(P0, P3, P3z, P10):
    return [("dense", P0, "dense"), ("z3", P3, "zipper"), ("z3nobits", P3z, "zipper"), ("z10", P10, "zipper")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="128,256,1024")
    ap.add_argument("--shapes", default="qkv,o,gate_up,down")
    ap.add_argument("--ncu", default="", help="shape,m: one launch per variant (profile target)")
    a = ap.parse_args()
    probe_header("probe_wgmma_zipper")
    if a.ncu:
        name, m = a.ncu.split(",")
        k, n = SHAPES[name]
        x = torch.randn(int(m), k, device="cuda", dtype=torch.bfloat16)
        launch_once(x, [(tag, PP[0], v, {}) for tag, PP, v in runs(*weights(k, n, rotate=False))])
        return
    for shape, m, x, y, packs in cases(a.shapes, a.ms):
        out = []
        for tag, PP, v in runs(*packs):
            t = time_graph([lambda q=q, v=v, x=x, y=y: ops.launch(x, q, v, out=y) for q in PP])
            out.append(f"{tag}={t * 1e6:.1f}")
        print(f"{shape} M={m} " + "  ".join(out) + f"  [{ops.LAST_LAUNCH['kernels'][0]}]", flush=True)


if __name__ == "__main__":
    main()
