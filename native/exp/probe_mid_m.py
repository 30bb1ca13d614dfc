"""Plan sweep (device): which tiled / wgmma plan is fastest at M = 32..128 (NOTES.md v17).

Question: the tiled kernel runs LLaMA-3 o at M = 64 at 20 us (cfg6, 8 splits, 106 TFLOP/s) where its own
HMMA rate at large M (~360 TFLOP/s) would give ~6 us and the weights ~3 us. Is a different tile or split
already faster (a planner problem), or is every plan slow (a kernel problem)? Per shape and M, dense and
zipper @3 %, the default route first, then every forced tiled (cfg, splitk) and wgmma (bt, wgs, splitk):
  python3 native/exp/probe_mid_m.py --ms 32,64 [--shapes o,down] [--cfgs 2,5,6,3] [--splits 1,2,4,8,16]
  python3 native/exp/probe_mid_m.py --ncu o,64,6,8     (one dense + one zipper launch of that plan, for ncu)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="32,64")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--cfgs", default="5,6,2")
    ap.add_argument("--splits", default="1,2,4,8,16")
    ap.add_argument("--wgmma", default="64:2:1,64:2:2,64:2:4,64:3:1,64:3:2,64:3:4",
                    help="bt:wgs:splitk plans of the wgmma family (bt >= M only)")
    ap.add_argument("--top", type=int, default=6, help="plans printed per (shape, M, mode), fastest first")
    ap.add_argument("--ncu", default="", help="shape,m,cfg,splitk: one dense and one zipper launch")
    a = ap.parse_args()
    probe_header("probe_mid_m")
    if a.ncu:
        name, m, cfg, sk = a.ncu.split(",")
        k, n = SHAPES[name]
        P0, P3, _, _ = weights(k, n, rotate=False)
        x = torch.randn(int(m), k, device="cuda", dtype=torch.bfloat16)
        launch_once(x, [(v, PP[0], v, {"cfg": int(cfg), "splitk": int(sk)}) for PP, v in ((P0, "dense"), (P3, "zipper"))])
        return
    for name, m, x, y, (P0, P3, _, _) in cases(a.shapes, a.ms):
        for PP, v in ((P0, "dense"), (P3, "zipper")):
            plans = [("route", {})]
            plans += [(f"cfg{c}/s{s}", {"cfg": int(c), "splitk": int(s)})
                      for c in a.cfgs.split(",") for s in a.splits.split(",")]
            plans += [(f"wgmma{w}", {"path": "wgmma", "wgmma": tuple(map(int, w.split(":")))})
                      for w in a.wgmma.split(",") if w and int(w.split(":")[0]) >= m]
            res = []
            for tag, kw in plans:
                try:
                    t = time_graph([lambda q=q, v=v, kw=kw, x=x, y=y: ops.launch(x, q, v, out=y, **kw) for q in PP])
                except (RuntimeError, ValueError) as e:  # plans a kernel rejects (e.g. cluster limits)
                    print(f"  {name} M={m} {v} {tag}: rejected ({str(e).splitlines()[0][:100]})", flush=True)
                    continue
                res.append((t * 1e6, tag, ops.LAST_LAUNCH["kernels"][0]))
            route = next(r for r in res if r[1] == "route")
            best = sorted(res)[: a.top]
            print(f"{name} M={m} {v}: route {route[0]:.1f} us [{route[2]}]; best: "
                  + "; ".join(f"{t:.1f} {kern}" for t, _, kern in best), flush=True)


if __name__ == "__main__":
    main()
