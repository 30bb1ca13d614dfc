#!/usr/bin/env python3
"""A/B probe of the small-M kernel (gemv_kernels.cu) on the LLaMA-3-8B shapes: the tiled kernel,
the default routing, the planner's gemv choice and forced (warps, kparts, splitk) plans, dense and zipper@3%, same run,
same timing method as scripts/bench_kernels.py (CUDA graph, rotated weight copies, median).

    python3 native/exp/probe_gemv.py [--ms 1,16] [--plans 16,4,2;8,2,4] [--budget 0.03]
"""
from __future__ import annotations

import argparse
import sys

import probe_common


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="1,16")
    ap.add_argument("--plans", default="16,4,1;16,4,2;16,4,4;8,2,1;8,2,2;8,2,4;8,1,4;16,2,2")
    ap.add_argument("--budget", type=float, default=0.03)
    ap.add_argument("--shapes", default="llama3")
    ap.add_argument("--runs", default="default,tiled,gemv-auto", help="which of default / tiled / gemv-auto to time")
    a = ap.parse_args()
    ms = [int(v) for v in a.ms.split(",")]
    plans = [tuple(int(v) for v in s.split(",")) for s in a.plans.split(";") if s]
    # default = ops.launch's own routing; gemv-auto = the gemv kernel with gemv_plan's cost-model choice
    runs = [r for r in [("default", {}), ("tiled", {"path": "tiled"}), ("gemv-auto", {"path": "gemv"})]
            if r[0] in a.runs.split(",")]
    runs += [(f"gemv{pl}", {"path": "gemv", "gemv": pl}) for pl in plans]
    probe_common.run(a.shapes, ms, a.budget, runs, label_width=14)
    return 0


if __name__ == "__main__":
    sys.exit(main())
