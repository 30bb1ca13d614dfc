#!/usr/bin/env python3
"""How the wgmma kernel's time scales with the K split (cluster split-K) at small M: dense, forced
(bt, wgs, splitk) tiles on the qkv and o shapes of LLaMA-3-8B, M = 1 and 64, timed like
scripts/bench_kernels.py (CUDA graph over weight copies rotated past L2, median).

    python3 native/exp/probe_wgmma_split.py
"""
from __future__ import annotations

import sys

import torch
from probe_common import bk, ops, pack_quantized  # probe_common puts the repo and scripts/ on sys.path

TILES = ((64, 2, 1), (64, 2, 2), (64, 2, 4), (64, 2, 8), (128, 2, 1), (64, 4, 1), (64, 4, 4))


def main() -> int:
    for name, k, n in bk.SHAPES["llama3"][:2]:
        ps = bk.rotated_packs(pack_quantized(bk.random_qw_gpu(n, k, 0.0, seed=7), torch.bfloat16, "cuda"))
        for m in (1, 64):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            for tl in TILES:
                t = bk.time_graph([lambda p=p, tl=tl, x=x, y=y: ops.launch(x, p, "dense", out=y, path="wgmma", wgmma=tl)
                                   for p in ps])
                print(f"{name} M={m} {tl}: {t * 1e6:.1f} us  {ops.LAST_LAUNCH['kernels'][0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
