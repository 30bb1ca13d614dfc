"""A/B probe (device) for v9: split-K fix-up (global counters vs thread-block cluster/DSMEM),
programmatic dependent launch on/off, split-K cap 8 vs 16; dense / zipper@3% / zipper@10% /
separate@10% on the four LLaMA-3-8B shapes at M=1 and 16, cuBLAS in the same run
(native/NOTES.md v9). Prints one line per (shape, M, variant) with us per setting."""
import dataclasses
import os
import re
import sys

import torch

sys.path.insert(0, os.getcwd())
from mosaic_exp.kernels import ops
from mosaic_exp.kernels.packing import pack_quantized
from scripts.bench_kernels import copies_for, random_qw_gpu, time_graph


def copies(p, n):
    return [p] + [dataclasses.replace(p, **{k: v.clone() for k, v in p.tensors().items()}) for _ in range(n - 1)]


SETTINGS = [("g-off", "global", "off", 8), ("g-early", "global", "early", 8), ("g-late", "global", "late", 8),
            ("c-off", "cluster", "off", 8), ("c-early", "cluster", "early", 8), ("c-late", "cluster", "late", 8),
            ("c16-late", "cluster", "late", 16)]
ms = [int(v) for v in os.environ.get("PROBE_MS", "1,16,64").split(",")]
for name, k, n in [("qkv", 4096, 6144), ("o", 4096, 4096), ("gate_up", 4096, 28672), ("down", 14336, 4096)]:
    packs = {b: pack_quantized(random_qw_gpu(n, k, b, seed=37 + int(b * 100)), torch.bfloat16, "cuda")
             for b in (0.03, 0.1)}
    nc = copies_for(packs[0.03].nbytes())
    P = {b: copies(q, nc) for b, q in packs.items()}
    # zipper kernel with every residual bit cleared: same code path, no residual loads/adds
    P["nobits"] = [dataclasses.replace(q, res_bits=torch.zeros_like(q.res_bits)) for q in P[0.03]]
    W = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(2 * n * k))]
    for m in ms:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        tc = time_graph([lambda w=w: torch.matmul(x, w.t()) for w in W]) * 1e6
        for var, b in [("dense", 0.03), ("zipper", "nobits"), ("zipper", 0.03), ("zipper", 0.1), ("separate", 0.1)]:
            cells, lab = [], ""
            for tag, fx, pdl, msk in SETTINGS:
                os.environ["MOSAIC_MAX_SPLITK"] = str(msk)
                t = time_graph([lambda q=q: ops.launch(x, q, var, out=y, fixup=fx, pdl=pdl) for q in P[b]]) * 1e6
                sk = re.search(r"splitk(\d+)", ops.LAST_LAUNCH["kernels"][0]).group(1)
                cells.append(f"{tag}={t:.1f}/{sk}")
                lab = ops.LAST_LAUNCH["kernels"]
            os.environ.pop("MOSAIC_MAX_SPLITK", None)
            print(f"{name} M={m} {var}@{b} cublas={tc:.1f} " + " ".join(cells) + f" last={lab}", flush=True)
