#!/usr/bin/env python3
"""A/B probe of the large-M kernel (wgmma_kernels.cu) on the LLaMA-3-8B shapes: cuBLAS, the tiled kernel
and the wgmma kernel (its planner and forced (bt, wgs[, splitk]) tiles), dense and zipper@3%, same run,
same timing method as scripts/bench_kernels.py (CUDA graph, rotated weight copies, median).

    python3 native/exp/probe_wgmma.py [--ms 64,256,4096] [--budget 0.03]
"""
from __future__ import annotations

import argparse
import sys

import probe_common


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="64,128,256,512,1024,4096")
    ap.add_argument("--budget", type=float, default=0.03)
    ap.add_argument("--shapes", default="llama3")
    ap.add_argument("--tiles", default="64,2;128,2;128,4;128,3;256,3", help="(bt, wgs[, splitk]) CTA tiles")
    a = ap.parse_args()
    ms = [int(v) for v in a.ms.split(",")]
    tiles = [tuple(int(v) for v in t.split(",")) for t in a.tiles.split(";") if t]
    runs = [("tiled", {"path": "tiled"}), ("wgmma-auto", {"path": "wgmma"})]
    runs += [(f"wgmma{','.join(map(str, tl))}", {"path": "wgmma", "wgmma": tl}) for tl in tiles]
    probe_common.run(a.shapes, ms, a.budget, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
