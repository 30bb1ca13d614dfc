"""A/B probe (device): the tiled kernel's split-K plan and fix-up against PDL overlap (NOTES.md v16).

Hypothesis: at LLaMA-3 o, M = 16 the zipper kernel gains almost nothing from programmatic dependent launch
(dense 10.8 -> 8.2 us, zipper 12.5 -> 12.3) because two consecutive grids of 32 clusters of 8 CTAs do not fit
at once (62 resident 8-CTA clusters with the zipper's shared memory, 77 with the dense kernel's), so the
next grid's prologue cannot overlap. Forced plans per shape and M, dense and zipper (3 %) with PDL on and
off, and the zipper kernel with every residual bit cleared (PDL on):
  python3 native/exp/probe_split_plans.py --shapes o --ms 8,16 --plans 8:cluster,8:global,7:cluster,4:cluster

Session 15 (NOTES.md v18): the same question for the 64-column tile at M = 33..64 (o: dense cfg 2 15.7 us, its
zipper 20.1 against cfg 6's 18.1; the cfg 2 zipper fits 4 CTAs per SM, the dense kernel 5, so 64 clusters of 8
may not all be resident), with the tile forced:
  python3 native/exp/probe_split_plans.py --shapes o,qkv --ms 48,64 --cfg 2 --plans 8:cluster,8:global,7:cluster,7:global,6:cluster
and for NOTES.md v20's 5-CTA cfg 4 zipper (5 stages; its ring fits 5 CTAs per SM only with lead 1):
  python3 native/exp/probe_split_plans.py --shapes o,qkv --ms 16 --cfg 4 --rlead 1 --plans 8:cluster,7:cluster
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
    ap.add_argument("--shapes", default="o")
    ap.add_argument("--cfg", type=int, default=None, help="tile config (default: the planner's for each M)")
    ap.add_argument("--rlead", type=int, default=None,
                    help="the zipper's residual lead (default: zipper_ring's); 1 = the smallest ring (NOTES.md v20)")
    ap.add_argument("--ms", default="8,16")
    ap.add_argument("--plans", default="8:cluster,8:global,7:cluster,6:cluster,4:cluster")
    a = ap.parse_args()
    probe_header("probe_split_plans")
    for shape, m, x, y, (P0, P3, P3z, _) in cases(a.shapes, a.ms):
        probe_m(a, shape, m, x, y, P0, P3, P3z)


def probe_m(a, shape: str, m: int, x, y, P0, P3, P3z) -> None:
    cfg = ops.default_cfg(m) if a.cfg is None else a.cfg
    for spec in a.plans.split(","):
        sk, fx = spec.split(":")
        out = []
        for tag, PP, v in (("dense", P0, "dense"), ("z3", P3, "zipper"), ("z3nobits", P3z, "zipper")):
            for pdl in (("auto", "off") if tag != "z3nobits" else ("auto",)):
                kw = {"splitk": int(sk), "fixup": fx, "pdl": None if pdl == "auto" else "off", "path": "tiled",
                      "cfg": cfg, **({"rlead": a.rlead} if v == "zipper" and a.rlead else {})}
                name = f"{tag}{'' if pdl == 'auto' else '_nopdl'}"
                try:
                    t = time_graph([lambda q=q, v=v, kw=kw, x=x, y=y: ops.launch(x, q, v, out=y, **kw) for q in PP])
                except (RuntimeError, ValueError) as e:  # a plan the launcher refuses (lead, cluster limits)
                    out.append(f"{name}=rejected({str(e).splitlines()[0][:60]})")
                    continue
                out.append(f"{name}={t * 1e6:.1f}")
        kern = ops.LAST_LAUNCH["kernels"][0]  # the last zipper run's: its ring (rslots) and lead
        rslots = int(kern.split("rslots")[1].split(",")[0].rstrip("]")) if "rslots" in kern else 1
        clusters = (ops.max_active_clusters(cfg, ops.MODE_DENSE, int(sk), 1),
                    ops.max_active_clusters(cfg, ops.MODE_ZIPPER, int(sk), rslots))
        print(f"{shape} M={m} splitk={sk} {fx}: " + "  ".join(out) + f"  [{kern}]"
              f" resident {sk}-CTA clusters (cfg{cfg}, dense / zipper with rslots {rslots}): "
              f"{clusters[0]}/{clusters[1]}", flush=True)


if __name__ == "__main__":
    main()
