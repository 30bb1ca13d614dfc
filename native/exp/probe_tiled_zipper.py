"""A/B probe (device): where the tiled kernel's zipper overhead at M = 8..32 comes from (NOTES.md v16).

Per LLaMA-3 shape and M, all on the tiled kernel (path='tiled'), bf16, CUDA graphs over weight copies
rotated past L2 (bench_kernels.time_graph):
  dense       the dense kernel
  z3          zipper at a 3 % budget (128 x 128 blocks, the benchmark's weights)
  z3nobits    the same zipper kernel and plan with every residual bit cleared (no residual loads or
              bodies: what is left is the zipper's fixed cost)
  z3plan      z3 with the dense kernel's split count forced (isolates the planner's residency effect)
  dense_nopdl / z3_nopdl   without programmatic dependent launch
  z10         zipper at a 10 % budget
  python3 native/exp/probe_tiled_zipper.py --ms 8,16,32 [--shapes o,down]
  python3 native/exp/probe_tiled_zipper.py --ncu o,16      (one launch of each variant, for ncu)
"""
import argparse
import dataclasses
import datetime as dt
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.getcwd())
from mosaic_exp.kernels import ops
from mosaic_exp.kernels.packing import pack_quantized
from scripts.bench_kernels import SHAPES as FAMILIES
from scripts.bench_kernels import random_qw_gpu, rotated_packs, time_graph

SHAPES = {name: (k, n) for name, k, n in FAMILIES["llama3"]}


def weights(k, n, rotate=True):
    """Packed weights at budgets 0 / 3 % / 10 % and the 3 % ones with every residual bit cleared: lists of
    copies rotated past L2 (one copy each without ``rotate``: a single launch for ncu)."""
    p0 = pack_quantized(random_qw_gpu(n, k, 0.0, seed=7), torch.bfloat16, "cuda")
    p3 = pack_quantized(random_qw_gpu(n, k, 0.03, seed=37), torch.bfloat16, "cuda")
    p10 = pack_quantized(random_qw_gpu(n, k, 0.1, seed=107), torch.bfloat16, "cuda")
    P0, P3, P10 = ((rotated_packs(q) if rotate else [q]) for q in (p0, p3, p10))
    P3z = [dataclasses.replace(q, res_bits=torch.zeros_like(q.res_bits)) for q in P3]
    return P0, P3, P3z, P10


def cases(shapes: str, ms: str):
    """(shape, m, x, y, (P0, P3, P3z, P10)) for each of the comma-separated shapes and Ms: the rotated weights
    (`weights`) once per shape, a random bf16 x [m, k] and an output y [m, n] per M."""
    for shape in shapes.split(","):
        k, n = SHAPES[shape]
        packs = weights(k, n)
        for m in map(int, ms.split(",")):
            yield (shape, m, torch.randn(m, k, device="cuda", dtype=torch.bfloat16),
                   torch.empty(m, n, device="cuda", dtype=torch.bfloat16), packs)


def probe_header(tool: str) -> None:
    """The first line of a probe's log: its arguments, the commit ($MOSAIC_COMMIT), the device and the date."""
    print(f"{tool} {' '.join(sys.argv[1:])} commit={os.environ.get('MOSAIC_COMMIT', '?')} "
          f"device={torch.cuda.get_device_name()} date={dt.datetime.now(dt.UTC):%FT%TZ}", flush=True)


def launch_once(x, runs):
    """One launch of each (tag, packed weights, variant, ops.launch keywords), synchronized and named (an ncu
    target: one kernel per profiled launch)."""
    for tag, q, v, kw in runs:
        ops.launch(x, q, v, **kw)
        torch.cuda.synchronize()
        print(tag, ops.LAST_LAUNCH["kernels"], flush=True)


def variants(P0, P3, P3z, P10, m, k):
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    ops.launch(x, P0[0], "dense", path="tiled")
    dense_split = int(ops.LAST_LAUNCH["kernels"][0].split("splitk")[1].split(",")[0].rstrip("]"))
    return x, [("dense", P0, "dense", {}), ("z3", P3, "zipper", {}), ("z3nobits", P3z, "zipper", {}),
               ("z3plan", P3, "zipper", {"splitk": dense_split}),
               ("dense_nopdl", P0, "dense", {"pdl": "off"}), ("z3_nopdl", P3, "zipper", {"pdl": "off"}),
               ("z10", P10, "zipper", {})]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="8,16,32")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--ncu", default="", help="shape,m: one launch per variant (profile target)")
    a = ap.parse_args()
    commit = os.environ.get("MOSAIC_COMMIT") or subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                                               capture_output=True, text=True, check=False).stdout.strip()
    print(f"probe_tiled_zipper {' '.join(sys.argv[1:])} commit={commit} device={torch.cuda.get_device_name()} "
          f"date={dt.datetime.now(dt.UTC):%FT%TZ}", flush=True)
    if a.ncu:
        name, m = a.ncu.split(",")
        k, n = SHAPES[name]
        P0, P3, P3z, P10 = weights(k, n, rotate=False)
        x, vs = variants(P0, P3, P3z, P10, int(m), k)
        launch_once(x, [(tag, PP[0], v, {"path": "tiled", **kw}) for tag, PP, v, kw in vs])
        return
    for name in a.shapes.split(","):
        k, n = SHAPES[name]
        P0, P3, P3z, P10 = weights(k, n)
        for m in map(int, a.ms.split(",")):
            x, vs = variants(P0, P3, P3z, P10, m, k)
            y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            out = []
            for tag, PP, v, kw in vs:
                t = time_graph([lambda q=q, v=v, kw=kw, x=x, y=y: ops.launch(x, q, v, out=y, path="tiled", **kw) for q in PP])
                out.append(f"{tag}={t * 1e6:.1f}{ops.LAST_LAUNCH['kernels'][0].split('[')[1].rstrip(']')}")
            print(f"{name} M={m} " + "  ".join(out), flush=True)


if __name__ == "__main__":
    main()
