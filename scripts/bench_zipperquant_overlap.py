#!/usr/bin/env python3
"""ZipperQuant's GPU + CPU layer: does the CPU's sparse high-order part hide behind the GPU's dense part?

    python scripts/bench_zipperquant_overlap.py --out $OUT        (on the device; needs CUDA, the native module
                                                                   and the CPU module: scripts/build_native.py)

Per LLaMA-3-8B layer shape, M and density of high-order bits (a random weight with outlier columns, quantized
with the ``inlier`` rule at that density), in the same run, wall-clock medians of whole forwards (synchronized):
  low     the dense 4-bit part alone (QuantLinear, native ``dense`` kernel, fp16)
  high    the sparse part alone on the CPU (``cpu_direct`` and ``cpu_lut``), from a host copy of x
  split   BitSplitLinear: x copied to the host on a side stream, dense part on the GPU meanwhile, CPU part, the
          result copied back and added
overlap = (low + high) / split (2.0 = perfect overlap of equal halves; 1.0 = none). "host" columns: the host time
of one eager call with the GPU idle before it (the launch path's Python and dispatch cost). With --profile, the
dense part's eager call under cProfile (what its host time is spent on) goes to a text file beside the results.
Results as markdown + JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mosaic_exp.kernels.bitsplit_linear import BitSplitLinear
from mosaic_exp.kernels.cpu_lut import PackedHigh, high_bits_mm
from mosaic_exp.logging.environment import result_commit
from mosaic_exp.logging.records import write_bench_result
from mosaic_exp.quant.zipperquant import zipperquant_quantize

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}


def wall_us(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        t.append(time.perf_counter() - t0)
    return statistics.median(t) * 1e6


def host_us(fn, reps: int) -> float:
    """Host time of one eager call (launch overhead: Python, dispatch, launches), the GPU idle before each."""
    for _ in range(3):
        fn()
    t = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    return statistics.median(t) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="o,down")
    ap.add_argument("--ms", default="1,16")
    ap.add_argument("--densities", default="0.005,0.01")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--profile", action="store_true", help="cProfile the dense part's eager call")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_zipperquant_overlap needs a CUDA device")
    torch.set_num_threads(a.threads)
    rows = []
    for shape in a.shapes.split(","):
        k, n = SHAPES[shape]
        g = torch.Generator(device="cuda").manual_seed(0)
        W = torch.randn(n, k, device="cuda", generator=g) * 0.02
        W[:, torch.randperm(k, device="cuda", generator=g)[:32]] *= 20  # smoothed outlier columns
        for d in (float(v) for v in a.densities.split(",")):
            bsw, _ = zipperquant_quantize(W, group_size=128, scale_rule="inlier", outlier_fraction=d)
            bsw = bsw.to("cpu")
            mods = {kern: BitSplitLinear(bsw, high_kernel=kern, dtype=torch.float16, device="cuda")
                    for kern in ("cpu_direct", "cpu_lut")}
            for mod in mods.values():
                mod.use_low_variant("dense", torch.float16)
            ph = PackedHigh.from_weight(bsw)
            for m in (int(v) for v in a.ms.split(",")):
                x = torch.randn(m, k, device="cuda", dtype=torch.float16)
                xh = x.cpu()
                low = mods["cpu_direct"].low
                row = {"shape": shape, "k": k, "n": n, "m": m, "density": bsw.high_density,
                       "low_us": wall_us(lambda low=low, x=x: low(x), a.reps),
                       "low_host_us": host_us(lambda low=low, x=x: low(x), a.reps)}
                for kern, mod in mods.items():
                    row[f"high_{kern}_us"] = wall_us(
                        lambda xh=xh, ph=ph, lut=(kern == "cpu_lut"): high_bits_mm(xh, ph, lut=lut), a.reps)
                    row[f"split_{kern}_us"] = wall_us(lambda mod=mod, x=x: mod(x), a.reps)
                    row[f"split_{kern}_host_us"] = host_us(lambda mod=mod, x=x: mod(x), a.reps)
                    row[f"overlap_{kern}"] = (row["low_us"] + row[f"high_{kern}_us"]) / row[f"split_{kern}_us"]
                row["kernel_ran"] = mods["cpu_direct"].last_kernel
                rows.append(row)
                print(json.dumps(row), flush=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    if a.profile:
        import cProfile
        import io
        import pstats

        x = torch.randn(1, k, device="cuda", dtype=torch.float16)
        prof = cProfile.Profile()
        prof.runcall(lambda: [low(x) for _ in range(200)])
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        Path(a.out, f"zipperquant_dense_dispatch_profile_{stamp}.txt").write_text(
            f"cProfile of 200 eager calls of the dense part (shape {shape}, M = 1) on {torch.cuda.get_device_name(0)}"
            f", commit {result_commit(ROOT)}\n{buf.getvalue()}")
    meta = {"command": " ".join(["python", *sys.argv]), "gpu": torch.cuda.get_device_name(0),
            "cpu_threads": a.threads, "date_utc": stamp, "commit": result_commit(ROOT),
            "method": f"wall-clock median of {a.reps} synchronized forwards after 3 warm-up"}
    table = [("| shape | M | density | low (GPU) us | low host us | high direct us | split direct us | overlap | high lut us | "
              "split lut us | overlap |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['shape']} | {r['m']} | {r['density']:.4f} | {r['low_us']:.1f} | {r['low_host_us']:.1f} | "
                     f"{r['high_cpu_direct_us']:.1f} | {r['split_cpu_direct_us']:.1f} | {r['overlap_cpu_direct']:.2f} | "
                     f"{r['high_cpu_lut_us']:.1f} | {r['split_cpu_lut_us']:.1f} | {r['overlap_cpu_lut']:.2f} |")
    md = write_bench_result(a.out, f"zipperquant_overlap_{stamp}", f"ZipperQuant GPU + CPU overlap ({stamp})",
                            meta, rows, table)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
