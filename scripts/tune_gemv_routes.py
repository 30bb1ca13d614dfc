#!/usr/bin/env python3
"""Measure the mid-M route table (mosaic_exp/kernels/routes.py) on the GPU at hand.

For every layer shape of the chosen families, both modes (dense, zipper at --budget; --modes picks) and each row bucket
(mb 2: M = 9..16, mb 4: M = 17..32, mb 8: M = 33..64), time at the bucket's probe Ms with the benchmark's
method (CUDA graph of back-to-back calls over weight copies rotated past L2, median):
  - the tiled kernel with the planner's own tile and split (the baseline, "tiled"),
  - every candidate gemv plan (ops.GEMV_TUNE_PLANS; mb 2 and 4),
  - every candidate tiled plan (cfg, splitk) (ops.TILED_TUNE_PLANS; the zipper-only configs for zipper only),
  - every candidate wgmma tile (bt, wgs, splitk) (ops.WGMMA_TUNE_PLANS; mb 8, sm_90),
  - with --merge, the merged table's own route for that shape, mode and bucket (so a route of a family this run
    does not search, e.g. a gemv plan when the bucket is left out of --gemv-buckets, is kept unless beaten),
and keep the candidate with the least summed time if it beats the incumbent (the merged table's route, else the
baseline 'tiled') by more than --margin, else the incumbent (pick_route). --repick re-picks a run's stored timings
without a GPU. Writes the table (and every timing) as JSON:

    python3 scripts/tune_gemv_routes.py --out mosaic_exp/kernels/routes/nvidia_h100_80gb_hbm3.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_kernels as bk

from mosaic_exp.kernels import ops
from mosaic_exp.kernels import routes as rt
from mosaic_exp.kernels.packing import pack_quantized
from mosaic_exp.logging.environment import result_commit

BUCKET_MS = {2: (12, 16), 4: (24, 32), 8: (48, 64)}


def candidates(mb: int, sm90: bool, gemv_buckets=rt.GEMV_BLOCKS, variant: str = "zipper") -> list[tuple[str, dict, object]]:
    """(label, ops.launch keywords, the table's plan) of every plan timed for row bucket mb and variant ('dense' /
    'zipper': the zipper-only tile configs are left out of dense), the baseline ('tiled') first."""
    runs = [("tiled", "tiled")]
    if mb in gemv_buckets:
        runs += [(f"{w},{kp},{sk}", [w, kp, sk]) for w, kp, sk in ops.GEMV_TUNE_PLANS]
    runs += [(f"tiled:{c},{sk}", {"tiled": [c, sk]}) for c, sk in ops.TILED_TUNE_PLANS.get(mb, ())
             if variant == "zipper" or c not in ops.ZIPPER_ONLY_TUNE_CFGS]
    if sm90:
        runs += [(f"wgmma:{bt},{wgs},{sk}", {"wgmma": [bt, wgs, sk]}) for bt, wgs, sk in ops.WGMMA_TUNE_PLANS.get(mb, ())]
    return [(label, plan_kwargs(plan), plan) for label, plan in runs]


def plan_kwargs(plan) -> dict:
    """ops.launch keywords of a route table plan (routes.py's formats)."""
    if plan == "tiled":
        return {"path": "tiled"}
    if isinstance(plan, dict):
        (kind, v), = plan.items()
        if kind == "tiled":
            return {"path": "tiled", "cfg": v[0], "splitk": v[1]}
        return {"path": "wgmma", "wgmma": tuple(v)}
    return {"path": "gemv", "gemv": tuple(plan)}


def with_incumbent(runs: list, plan) -> list:
    """runs plus the merged table's route `plan` ("table:..." label) when no candidate already times it."""
    if plan is None or any(p == plan for _, _, p in runs):
        return runs
    return runs + [(f"table:{json.dumps(plan, separators=(',', ':'))}", plan_kwargs(plan), plan)]


def route_plans(table: dict | None) -> dict:
    """(n_pad, k_pad, mode, mb) -> plan of a route table (empty without one): the incumbents of a re-tune."""
    return {(r["n_pad"], r["k_pad"], r["mode"], r["mb"]): r["plan"] for r in (table or {}).get("routes", ())}


def timing_key(n_pad: int, k_pad: int, mode: str, mb: int) -> str:
    """The key of one shape, mode and bucket in a table's "timings" (written by a run, read by --repick)."""
    return f"{n_pad}x{k_pad}:{mode}:mb{mb}"


def pick_route(us: dict[str, list[float]], plans: dict[str, object], incumbent, margin: float):
    """The route for one shape, mode and bucket from its timings (label -> us at the bucket's Ms): the incumbent
    (the merged table's route; the planner's 'tiled' plan without one, or where it failed to run) stays unless
    another plan's summed time beats it by more than `margin`. The hysteresis keeps a measured route from
    flipping on run-to-run noise (session 16: qwen3 gate_up at M = 33..64 went wgmma -> tiled on a 2 % tie and
    ran 7.5 % slower at M = 64)."""
    sums = {lbl: sum(v) for lbl, v in us.items()}
    inc = next((lbl for lbl, p in plans.items() if p == incumbent and lbl in sums), "tiled")
    best = min(sums, key=sums.get)
    return plans[best] if sums[best] < sums[inc] * (1 - margin) else plans[inc]


def plan_of_label(label: str):
    """The table plan a timing label stands for (the labels `candidates` and `with_incumbent` write)."""
    if label == "tiled":
        return "tiled"
    if label.startswith("table:"):
        return json.loads(label[len("table:"):])
    kind, _, v = label.rpartition(":")
    nums = [int(x) for x in v.split(",")]
    return {kind: nums} if kind else nums


def repick(table: dict, old: dict | None, buckets, modes, margin: float) -> dict:
    """`table` (a tuning run's output, with its timings) with the routes of `buckets` x `modes` re-picked by
    pick_route against `old`'s routes as incumbents: no GPU needed."""
    old_plans = route_plans(old)
    routes, changed = [], []
    for r in table["routes"]:
        where = (r["n_pad"], r["k_pad"], r["mode"], r["mb"])
        t = table["timings"].get(timing_key(*where))
        if r["mb"] in buckets and r["mode"] in modes and t is not None:
            plans = {lbl: plan_of_label(lbl) for lbl in t["us"]}
            plan = pick_route(t["us"], plans, old_plans.get(where), margin)
            if plan != r["plan"]:
                changed.append({**{k: r[k] for k in ("n_pad", "k_pad", "mode", "mb")}, "from": r["plan"], "to": plan})
            r = {**r, "plan": plan}
        routes.append(r)
    return {**table, "routes": routes, "repicked": {"margin": margin, "changed": changed}}


def time_run(packs, m: int, k: int, n: int, variant: str, kw: dict) -> float | None:
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    try:
        return bk.time_graph([lambda p=p: ops.launch(x, p, variant, out=y, **kw) for p in packs])
    except (ValueError, RuntimeError) as e:  # a plan whose CTA does not fit, or a launch the binding refuses
        msg = str(e)
        if "no small-M plan fits" not in msg:
            print(f"    {kw}: {type(e).__name__}: {msg[:160]}", flush=True)
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="llama3,qwen3")
    ap.add_argument("--budget", type=float, default=0.03)
    ap.add_argument("--margin", type=float, default=0.03,
                    help="a candidate must beat the baseline (the planner's tiled plan) by this fraction")
    ap.add_argument("--out", required=True)
    ap.add_argument("--buckets", default="2,4,8", help="row buckets to tune (mb: 2 = M 9..16, 4 = 17..32, 8 = 33..64)")
    ap.add_argument("--gemv-buckets", default="2,4", help="buckets whose candidates include the gemv plans")
    ap.add_argument("--modes", default="dense,zipper", help="variants to tune (the others keep the merged table's routes)")
    ap.add_argument("--repick", default=None, metavar="TABLE",
                    help="no timing: re-pick TABLE's routes of --buckets x --modes from its stored timings, the --merge "
                         "table's routes as incumbents, and write --out (tables tuned before the hysteresis)")
    ap.add_argument("--merge", default=None,
                    help="a table whose entries (and timings) for the buckets not tuned here are kept")
    a = ap.parse_args()
    buckets = [int(b) for b in a.buckets.split(",")]
    gemv_buckets = tuple(int(b) for b in a.gemv_buckets.split(",") if b)
    modes = [v for v in a.modes.split(",") if v]
    if not set(buckets) <= set(BUCKET_MS) or not set(gemv_buckets) <= set(rt.GEMV_BLOCKS):
        print(f"tune_gemv_routes: --buckets must be within {sorted(BUCKET_MS)} and --gemv-buckets within {list(rt.GEMV_BLOCKS)}, "
              f"got {a.buckets!r} / {a.gemv_buckets!r}", file=sys.stderr)
        return 2
    if not modes or not set(modes) <= set(rt.MODES):
        print(f"tune_gemv_routes: --modes must be a non-empty subset of {list(rt.MODES)}, got {a.modes!r}", file=sys.stderr)
        return 2
    if a.repick:
        try:
            rt.load_table(a.repick)
            if a.merge:
                rt.load_table(a.merge)
        except rt.RouteTableError as e:
            print(f"tune_gemv_routes: {e}", file=sys.stderr)
            return 2
        table = repick(json.loads(Path(a.repick).read_text()), json.loads(Path(a.merge).read_text()) if a.merge else None,
                       buckets, modes, a.margin)
        table["repicked"].update(file=a.repick, command="python3 " + " ".join(sys.argv))
        Path(a.out).write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {a.out}: {len(table['repicked']['changed'])} routes changed {table['repicked']['changed']}")
        return 0
    if not torch.cuda.is_available():
        print("tune_gemv_routes: needs a CUDA device", file=sys.stderr)
        return 2
    old = None
    if a.merge:  # checked before any timing: a table that cannot be merged must not cost the tuning run
        try:
            dev, _ = rt.load_table(a.merge)
        except rt.RouteTableError as e:
            print(f"tune_gemv_routes: --merge: {e}", file=sys.stderr)
            return 2
        if dev != torch.cuda.get_device_name():
            print(f"tune_gemv_routes: --merge table {a.merge} is for {dev!r}, this GPU is "
                  f"{torch.cuda.get_device_name()!r}", file=sys.stderr)
            return 2
        old = json.loads(Path(a.merge).read_text())
    old_plans = route_plans(old)
    shapes = []
    for fam in a.shapes.split(","):
        for name, k, n in bk.SHAPES[fam]:
            if (n, k) not in [(s[2], s[1]) for s in shapes]:
                shapes.append((f"{fam}:{name}", k, n))
    routes, timings = [], {}
    for name, k, n in shapes:
        print(f"== {name} K={k} N={n}", flush=True)
        packs = {v: bk.rotated_packs(pack_quantized(bk.random_qw_gpu(n, k, b, seed=7), torch.bfloat16, "cuda"))
                 for v, b in (("dense", 0.0), ("zipper", a.budget))}
        p0 = packs["dense"][0]
        for mb in buckets:
            ms = BUCKET_MS[mb]
            for variant in modes:
                res, plans = {}, {}
                incumbent = old_plans.get((p0.n_pad, p0.k_pad, variant, mb))
                runs = with_incumbent(candidates(mb, torch.cuda.get_device_capability()[0] == 9, gemv_buckets, variant),
                                      incumbent)
                for label, kw, plan in runs:
                    ts = [time_run(packs[variant], m, k, n, variant, kw) for m in ms]
                    if all(t is not None for t in ts):
                        res[label], plans[label] = [round(t * 1e6, 2) for t in ts], plan
                other = {lbl: sum(v) for lbl, v in res.items() if lbl != "tiled"}
                best = min(other, key=other.get) if other else None
                pick = pick_route(res, plans, incumbent, a.margin)
                routes.append({"n_pad": p0.n_pad, "k_pad": p0.k_pad, "mode": variant, "mb": mb, "plan": pick})
                # keyed by the padded shape, as the routes are (the tuned families' shapes are multiples of 128,
                # so the committed tables' keys read the same)
                timings[timing_key(p0.n_pad, p0.k_pad, variant, mb)] = {"ms": list(ms), "us": res}
                bl = f"{best} {res[best]}" if best else "-"
                print(f"  mb{mb} {variant:6s} tiled {res['tiled']} us | best other {bl} -> {pick}", flush=True)
        del packs
        torch.cuda.empty_cache()
    merged_from = None
    if old is not None:
        tuned = {(r["n_pad"], r["k_pad"], r["mode"], r["mb"]) for r in routes}
        kept = [r for r in old["routes"] if (r["n_pad"], r["k_pad"], r["mode"], r["mb"]) not in tuned]
        routes = kept + routes
        timings = {**{k: v for k, v in old.get("timings", {}).items() if k not in timings}, **timings}
        merged_from = {"file": a.merge, "commit": old.get("commit"), "date": old.get("date"), "kept_routes": len(kept)}
    table = {"device": torch.cuda.get_device_name(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
             "commit": result_commit(ROOT), "command": "python3 " + " ".join(sys.argv),
             "budget": a.budget, "margin": a.margin, "bucket_ms": {str(k): v for k, v in BUCKET_MS.items()},
             "merged_from": merged_from,
             "torch": torch.__version__, "routes": routes, "timings": timings}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
