# v8 only (commit 554c10d): uses the 'late' zipper prologue removed in v9; v9: native/exp/probe_v9b.py
"""A/B probe (device): dense vs zipper (3% residual) vs zipper with every residual bit cleared,
cfg4 vs cfg7, first vs late prologue, on o / gate_up / down at M=1, 16 (native/NOTES.md v8)."""
import dataclasses
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
from mosaic_exp.kernels import ops
from mosaic_exp.kernels.packing import pack_quantized
from scripts.bench_kernels import copies_for, random_qw_gpu, time_graph


def copies(p, n):
    return [p] + [dataclasses.replace(p, **{k: v.clone() for k, v in p.tensors().items()}) for _ in range(n - 1)]

only = os.environ.get("PROBE_ONLY")
for name, k, n in [("o", 4096, 4096), ("gate_up", 4096, 28672), ("down", 14336, 4096)]:
    p0 = pack_quantized(random_qw_gpu(n, k, 0.0, seed=7), torch.bfloat16, "cuda")
    p3 = pack_quantized(random_qw_gpu(n, k, 0.03, seed=37), torch.bfloat16, "cuda")
    nc = copies_for(p3.nbytes())
    P0, P3 = copies(p0, nc), copies(p3, nc)
    # zipper kernel with every residual bit cleared: same code path, no residual loads/adds
    P3z = [dataclasses.replace(q, res_bits=torch.zeros_like(q.res_bits)) for q in P3]
    for m in (1, 16):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        res = {}
        for tag, PP, v, kw in [("dense4", P0, "dense", {"cfg": 4}), ("dense7", P0, "dense", {"cfg": 7}),
                               ("zfirst4", P3, "zipper", {"zprologue": "first", "cfg": 4}),
                               ("zlate4", P3, "zipper", {"zprologue": "late", "cfg": 4}),
                               ("zfirst7", P3, "zipper", {"zprologue": "first", "cfg": 7}),
                               ("nobits4", P3z, "zipper", {"zprologue": "first", "cfg": 4}),
                               ("nobits7", P3z, "zipper", {"zprologue": "first", "cfg": 7})]:
            t = time_graph([lambda q=q, x=x, v=v, y=y, kw=kw: ops.launch(x, q, v, out=y, **kw) for q in PP])
            res[tag] = (t * 1e6, ops.LAST_LAUNCH["kernels"])
        print(name, m, " ".join(f"{a}={b[0]:.1f}{b[1]}" for a, b in res.items()), flush=True)
