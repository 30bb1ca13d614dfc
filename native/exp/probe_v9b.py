"""A/B probe (device) for v9: the v9 defaults (auto split-K fix-up, auto PDL, residual lead chosen
by the host) against the v8-equivalent launch (global fix-up, no PDL, full residual lead) and v9
with the full lead; dense / zipper@3% / zipper@10% / separate@10% on the LLaMA-3-8B shapes,
cuBLAS in the same run (native/NOTES.md v9)."""
import dataclasses
import math
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


ms = [int(v) for v in os.environ.get("PROBE_MS", "1,16,64").split(",")]
acc = {}
for name, k, n in [("qkv", 4096, 6144), ("o", 4096, 4096), ("gate_up", 4096, 28672), ("down", 14336, 4096)]:
    packs = {b: pack_quantized(random_qw_gpu(n, k, b, seed=37 + int(b * 100)), torch.bfloat16, "cuda")
             for b in (0.03, 0.1)}
    nc = copies_for(packs[0.03].nbytes())
    P = {b: copies(q, nc) for b, q in packs.items()}
    W = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies_for(2 * n * k))]
    for m in ms:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        tc = time_graph([lambda w=w: torch.matmul(x, w.t()) for w in W]) * 1e6
        pro = ops._config(ops.default_cfg(m), ops.MODE_ZIPPER)["stages"] - 1
        for var, b in [("dense", 0.03), ("zipper", 0.03), ("zipper", 0.1), ("separate", 0.1)]:
            cells = []
            for tag, kw in [("v8", dict(fixup="global", pdl="off", rlead=pro)), ("v9", {}),
                            ("v9-fulllead", dict(rlead=pro))]:
                if var != "zipper":
                    kw = {a: v for a, v in kw.items() if a != "rlead"}
                t = time_graph([lambda q=q: ops.launch(x, q, var, out=y, **kw) for q in P[b]]) * 1e6
                lab = ops.LAST_LAUNCH["kernels"][0]
                lab = lab[lab.index("[") + 1:-1].replace("cfg", "").replace("splitk", "s")
                cells.append(f"{tag}={t:.1f}({lab})")
                acc.setdefault((m, f"{var}@{b}", tag), []).append(tc / t)
            print(f"{name} M={m} {var}@{b} cublas={tc:.1f} " + " ".join(cells), flush=True)
print("geomean speedup vs cuBLAS (LLaMA-3 shapes):")
for (m, v, tag), r in sorted(acc.items()):
    print(f"  M={m} {v} {tag}: {math.exp(sum(map(math.log, r)) / len(r)):.2f}x")
