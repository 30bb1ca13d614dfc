"""A/B probe (device): NOTES.md v22's work-balanced split-K ranges for the tiled zipper kernel.

Hypothesis: at M = 9..32 a k-tile with residual units costs the zipper about one more tile body, and one wave of
split-K CTAs ends with its slowest CTA, so the few CTAs that hold a residual block set the time (o at M = 16:
residual-free zipper 9.3 us, with its 3 % residual 11.1, where the residual's bytes are ~3 %). Balancing each n
column's k ranges by work (splitk_balance.py) should bring the zipper @3 % at M = 16 from +20 % over dense to
~+8-10 %. Per LLaMA-3 shape, M and budget: dense, the zipper with the kernel's uniform ranges, with the balanced
ones (the default build; one with -DMOSAIC_BALANCED_SPLITK=0 prints 'n/a'), and the residual-free zipper (uniform), all
on the default routes' tiled plans where the route is tiled (a gemv / wgmma route is left out: no split-K ranges):
  python3 native/exp/probe_balanced_splitk.py --shapes qkv,o,gate_up,down --ms 16,32,64
--costs times the balanced ranges for each residual tile cost c (splitk_balance.RESIDUAL_TILE_COST, the same c at
every tile height for that run): the c that minimizes the time, per M, is the measured cost to commit.
"""
import argparse
import os
import sys

sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "native", "exp"))
from probe_tiled_zipper import cases, probe_header

from mosaic_exp.kernels import ops, splitk_balance
from scripts.bench_kernels import time_graph


def timed(x, y, packs, variant, **kw):
    """(us, kernel name) of ops.launch over rotated copies, or (None, reason)."""
    try:
        t = time_graph([lambda q=q: ops.launch(x, q, variant, out=y, **kw) for q in packs])
    except (RuntimeError, ValueError) as e:
        return None, f"{type(e).__name__}: {str(e)[:80]}"
    return t * 1e6, ops.LAST_LAUNCH["kernels"][0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="qkv,o,gate_up,down")
    ap.add_argument("--ms", default="16,32,64")
    ap.add_argument("--costs", default="", help="residual tile costs to time (default: RESIDUAL_TILE_COST's own)")
    a = ap.parse_args()
    costs = [float(c) for c in a.costs.split(",") if c]
    probe_header("probe_balanced_splitk")
    built = ops.balanced_splitk_built()
    for shape, m, x, y, (P0, P3, P3z, P10) in cases(a.shapes, a.ms):
        dense, _ = timed(x, y, P0, "dense")
        for tag, packs in (("z3", P3), ("z10", P10)):
            uni, kern = timed(x, y, packs, "zipper", balance=False)
            if not kern.startswith("zipper["):
                print(f"{shape} M={m} {tag}: route {kern} (not the tiled kernel): skipped", flush=True)
                continue
            bal, kb = timed(x, y, packs, "zipper", balance=True) if built else (None, "n/a (build without the switch)")
            nob, _ = timed(x, y, P3z, "zipper", balance=False) if tag == "z3" else (None, "")
            ratio = f"{bal / uni:.3f}" if bal and uni else "-"
            sweep = ""
            if built and costs:
                default = dict(splitk_balance.RESIDUAL_TILE_COST)
                try:
                    for c in costs:
                        splitk_balance.RESIDUAL_TILE_COST.update(dict.fromkeys(default, c))
                        ops._SPLIT_BOUNDS.clear()
                        tc, kc = timed(x, y, packs, "zipper", balance=True)
                        sweep += f" c{c:g}={'-' if tc is None else f'{tc:.1f}'}{'' if ',balanced' in kc else '(uniform)'}"
                finally:
                    splitk_balance.RESIDUAL_TILE_COST.update(default)
                    ops._SPLIT_BOUNDS.clear()
            print(f"{shape} M={m} {tag}: dense={dense:.1f} uniform={uni:.1f} balanced="
                  f"{'-' if bal is None else f'{bal:.1f}'} (x{ratio})"
                  + (f" nobits={nob:.1f}" if nob else "") + sweep + f"  [{kern}] [{kb}]", flush=True)


if __name__ == "__main__":
    main()
