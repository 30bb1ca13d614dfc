"""Probe (device): split-K of the large warp-specialized wgmma tile (bt 128, NOTES.md v26).

At M = 128-512 the bt 128 tile takes the same time per CTA whether 32 or 128 CTAs run (o: 29.8-30.1 us at M = 128 /
256 / 512), so a grid of fewer CTAs than SMs leaves SMs idle. Per LLaMA-3 shape and M, bf16, CUDA graphs over weight
copies rotated past L2 (the benchmark's method), dense and zipper @3 %:
  route   the default routing (the route table at M <= 64, else ops.wgmma_tile with its split rule)
  s<k>    the bt 128 tile forced with k K splits (global fix-up; the last split of a tile sums in split order)
  python3 native/exp/probe_ws_big_split.py --ms 64,128,256 [--shapes o,down] [--splits 1,2,4,8]
"""
import argparse
import os
import sys

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "native", "exp"))
from probe_tiled_zipper import cases, probe_header

from mosaic_exp.kernels import ops
from scripts.bench_kernels import time_graph


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="64,128,256")
    ap.add_argument("--shapes", default="qkv,o,gate_up,down")
    ap.add_argument("--splits", default="1,2,3,4,6,8")
    a = ap.parse_args()
    probe_header("probe_ws_big_split")
    splits = [int(s) for s in a.splits.split(",")]
    for shape, m, x, y, (P0, P3, _, _) in cases(a.shapes, a.ms):
        kt = P0[0].k_pad // 64
        for tag, PP, v in (("dense", P0, "dense"), ("z3", P3, "zipper")):
            t = time_graph([lambda q=q, v=v, x=x, y=y: ops.launch(x, q, v, out=y) for q in PP])
            out = [f"route={t * 1e6:.1f}[{ops.LAST_LAUNCH['kernels'][0]}]"]
            for s in splits:
                if s > kt:
                    continue
                t = time_graph([lambda q=q, v=v, x=x, y=y, s=s: ops.launch(x, q, v, out=y, path="wgmma", wgmma=(128, 3, s))
                                for q in PP])
                out.append(f"s{s}={t * 1e6:.1f}")
            print(f"{shape} M={m} {tag} " + "  ".join(out), flush=True)


if __name__ == "__main__":
    main()
