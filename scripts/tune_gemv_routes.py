#!/usr/bin/env python3
"""Measure the small-M route table (mosaic_exp/kernels/routes.py) on the GPU at hand.

For every layer shape of the chosen families, both modes (dense, zipper at --budget) and both multi-block
row sizes (mb 2: M = 9..16, mb 4: M = 17..32), time the tiled kernel and every candidate gemv plan
(ops.GEMV_TUNE_PLANS) at the bucket's probe Ms with the benchmark's method (CUDA graph of back-to-back calls
over weight copies rotated past L2, median), and keep the gemv plan with the least summed time if it beats
the tiled kernel by more than --margin, else 'tiled'. Writes the table (and every timing) as JSON:

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
from mosaic_exp.kernels.packing import pack_quantized

BUCKET_MS = {2: (12, 16), 4: (24, 32)}


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
    ap.add_argument("--margin", type=float, default=0.03, help="gemv must beat tiled by this fraction")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("tune_gemv_routes: needs a CUDA device", file=sys.stderr)
        return 2
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
        for mb, ms in BUCKET_MS.items():
            for variant in ("dense", "zipper"):
                runs = [("tiled", {"path": "tiled"})] + [(f"{w},{kp},{sk}", {"path": "gemv", "gemv": (w, kp, sk)})
                                                         for w, kp, sk in ops.GEMV_TUNE_PLANS]
                res = {}
                for label, kw in runs:
                    ts = [time_run(packs[variant], m, k, n, variant, kw) for m in ms]
                    if all(t is not None for t in ts):
                        res[label] = [round(t * 1e6, 2) for t in ts]
                tiled = sum(res["tiled"])
                gem = {lbl: sum(v) for lbl, v in res.items() if lbl != "tiled"}
                best = min(gem, key=gem.get) if gem else None
                pick = "tiled"
                if best is not None and gem[best] < tiled * (1 - a.margin):
                    pick = [int(v) for v in best.split(",")]
                routes.append({"n_pad": p0.n_pad, "k_pad": p0.k_pad, "mode": variant, "mb": mb, "plan": pick})
                timings[f"{n}x{k}:{variant}:mb{mb}"] = {"ms": list(ms), "us": res}
                bl = f"{best} {res[best]}" if best else "-"
                print(f"  mb{mb} {variant:6s} tiled {res['tiled']} us | best gemv {bl} -> {pick}", flush=True)
        del packs
        torch.cuda.empty_cache()
    table = {"device": torch.cuda.get_device_name(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
             "commit": bk.git_commit(), "command": "python3 " + " ".join(sys.argv),
             "budget": a.budget, "margin": a.margin, "bucket_ms": {str(k): v for k, v in BUCKET_MS.items()},
             "torch": torch.__version__, "routes": routes, "timings": timings}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
