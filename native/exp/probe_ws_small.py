#!/usr/bin/env python3
"""A/B probe of the warp-specialized small tiles (wgmma_kernels.cu, bt 8..64) against the tiled kernel and
cuBLAS, per M: the planner's choice (wgmma-auto) and every K split 1, 2, 4, 8 of the token tile that
holds M, dense and zipper at one budget, same run, timed as scripts/bench_kernels.py times.

    python3 native/exp/probe_ws_small.py [--ms 1,16,64] [--budget 0.03] [--shapes llama3]
"""
from __future__ import annotations

import argparse
import sys

import probe_common

from mosaic_exp.kernels import ops


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="1,16,64")
    ap.add_argument("--budget", type=float, default=0.03)
    ap.add_argument("--shapes", default="llama3")
    ap.add_argument("--splits", default="1,2,4,8")
    ap.add_argument("--extra", default="", help="more (bt, wgs[, splitk]) tiles, ';'-separated")
    a = ap.parse_args()
    extra = [tuple(int(v) for v in t.split(",")) for t in a.extra.split(";") if t]
    for m in (int(v) for v in a.ms.split(",")):
        bt = next(b for b in ops.WS_SMALL_TILES if b >= min(m, 64))
        tiles = [(bt, 3, int(s)) for s in a.splits.split(",")] + extra
        runs = [("tiled", {"path": "tiled"}), ("wgmma-auto", {"path": "wgmma"})]
        runs += [(f"ws{','.join(map(str, tl))}", {"path": "wgmma", "wgmma": tl}) for tl in tiles]
        probe_common.run(a.shapes, [m], a.budget, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
