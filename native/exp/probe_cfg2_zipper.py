"""Why the 64-column tile's zipper loses what its dense kernel gains at M = 33..64 (NOTES.md v18, session 15).

o at M = 64: dense cfg 2 (64 x 64 tile, split 8, cluster fix-up) 15.7 us against cfg 6's 17.8, but zipper cfg 2
20.1 us against cfg 6's 18.1. Hypothesis: residency. cfg 2 makes 512 CTAs of 8-CTA clusters; the dense kernel
(96 registers, 42 KB) fits 5 CTAs per SM, the zipper (125 registers, 42 KB + a 4-slot residual ring) 4, so its
64 clusters may not all be resident at once (a second partial wave; fewer splits make fewer, smaller clusters:
7 splits of 7-CTA clusters may fit where 8 do not). Per shape and M, same run:
  max active clusters (the occupancy API) and the timed plans: dense / zipper @3 % / zipper with every residual
  bit cleared (nobits: the zipper's fixed cost), cfg 2 and cfg 6 at splits 6, 7, 8, cluster and global fix-up.
    python3 native/exp/probe_cfg2_zipper.py [--shapes o,qkv] [--ms 48,64] [--splits 6,7,8]
"""
import argparse
import datetime as dt
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "native", "exp"))
from probe_tiled_zipper import SHAPES, weights

from mosaic_exp.kernels import ops
from mosaic_exp.kernels.native import load_native
from scripts.bench_kernels import time_graph


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ms", default="48,64")
    ap.add_argument("--shapes", default="o,qkv")
    ap.add_argument("--cfgs", default="2,6")
    ap.add_argument("--splits", default="6,7,8")
    a = ap.parse_args()
    print(f"probe_cfg2_zipper {' '.join(sys.argv[1:])} commit={os.environ.get('MOSAIC_COMMIT', '?')} "
          f"device={torch.cuda.get_device_name()} date={dt.datetime.now(dt.UTC):%FT%TZ}", flush=True)
    nat = load_native()
    splits = [int(v) for v in a.splits.split(",")]
    for cfg in map(int, a.cfgs.split(",")):
        for sk in splits:
            clusters = {mode: [nat.max_active_clusters(cfg, mode, sk, rs) for rs in (1, 2, 3, 4)]
                        for mode in (ops.MODE_DENSE, ops.MODE_ZIPPER)}
            print(f"cfg{cfg} split {sk}: max active clusters, rslots 1..4: dense {clusters[ops.MODE_DENSE]}, "
                  f"zipper {clusters[ops.MODE_ZIPPER]}", flush=True)
    for name in a.shapes.split(","):
        k, n = SHAPES[name]
        P0, P3, _, P3z = weights(k, n)
        for m in map(int, a.ms.split(",")):
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
            for cfg, sk, fixup in [(c, sk, f) for c in map(int, a.cfgs.split(",")) for sk in splits
                                   for f in ("cluster", "global")]:
                cells = []
                for PP, v, tag in ((P0, "dense", "dense"), (P3, "zipper", "zipper"), (P3z, "zipper", "nobits")):
                    kw = {"cfg": cfg, "splitk": sk, "fixup": fixup}
                    try:
                        t = time_graph([lambda q=q, v=v, kw=kw, x=x, y=y: ops.launch(x, q, v, out=y, **kw) for q in PP])
                        cells.append(f"{tag} {t * 1e6:5.1f} us [{ops.LAST_LAUNCH['kernels'][0]}]")
                    except (RuntimeError, ValueError) as e:
                        cells.append(f"{tag} rejected ({str(e).splitlines()[0][:80]})")
                print(f"{name} M={m} cfg{cfg} s{sk} {fixup}: " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
