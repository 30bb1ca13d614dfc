#!/usr/bin/env python3
"""Same-run A/B of builds of ZipperQuant's CPU high-bits kernel (native/cpu/high_bits_lut.cpp variants).

    python native/exp/ab_cpu_lut.py NAME=SOURCE.cpp [NAME=SOURCE.cpp ...] [--m 1,16] [--reps 500]

Each source is compiled with the project's own command (mosaic_exp.kernels.cpu_lut.build_cpu_lut, into a temporary
folder per variant), loaded side by side, and timed on the same packed weight: a LLaMA-3 o projection (4096 x 4096)
with 32 smoothed outlier columns, ZipperQuant inlier rule at 1 % (the module call itself, no torch op dispatch),
then the custom-op path of the current build for the dispatch cost. Medians of --reps calls after 50 warm-up,
variants interleaved per round so drift hits all alike. Prints command, CPU, threads, date and the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from mosaic_exp.kernels import cpu_lut
from mosaic_exp.kernels.cpu_lut import PackedHigh, build_cpu_lut, high_bits_mm, load_cpu_lut
from mosaic_exp.logging.environment import result_commit
from mosaic_exp.quant.zipperquant import zipperquant_quantize


def load_variant(source: Path, out: Path):
    cpu_lut.SOURCE = source  # build_cpu_lut compiles SOURCE; restored by the caller
    target = build_cpu_lut(out, quiet=True, force=True)
    spec = importlib.util.spec_from_file_location(cpu_lut.MODULE, target)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="NAME=path/to/source.cpp")
    ap.add_argument("--m", default="1,16")
    ap.add_argument("--reps", type=int, default=500)
    a = ap.parse_args()
    original = cpu_lut.SOURCE
    mods = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for item in a.variants:
                name, _, src = item.partition("=")
                mods[name] = load_variant(Path(src).resolve(), Path(tmp, name))
        finally:
            cpu_lut.SOURCE = original
        g = torch.Generator().manual_seed(0)
        k = n = 4096
        W = torch.randn(n, k, generator=g) * 0.02
        W[:, torch.randperm(k, generator=g)[:32]] *= 20
        bsw, _ = zipperquant_quantize(W, group_size=128, scale_rule="inlier", outlier_fraction=0.01)
        ph = PackedHigh.from_weight(bsw)
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "?")
        print(f"command: python {' '.join(sys.argv)}\ncpu: {cpu}, torch threads {torch.get_num_threads()}\n"
              f"date: {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%MZ}, commit {result_commit(ROOT)}\n"
              f"weight: o 4096 x 4096, high-order density {bsw.high_density:.4f} ({bsw.high_nnz} nonzeros)\n")
        print("| M | " + " | ".join(f"{v} us" for v in mods) + " | custom op (current build) us |")
        print("|---|" + "---|" * (len(mods) + 1))
        for m in (int(v) for v in a.m.split(",")):
            x = torch.randn(m, k, generator=g)
            calls = {v: (lambda mod=mod, x=x: mod.high_bits_mm(x, ph.indptr, ph.indices, ph.codes, ph.scales, ph.group_size,
                                                         ph.low_bits, ph.high_bits, False)) for v, mod in mods.items()}
            if load_cpu_lut() is not None:
                calls["op"] = lambda x=x: high_bits_mm(x, ph, lut=False)
            for fn in calls.values():
                for _ in range(50):
                    fn()
            times = {v: [] for v in calls}
            for _ in range(a.reps):
                for v, fn in calls.items():
                    t0 = time.perf_counter()
                    fn()
                    times[v].append(time.perf_counter() - t0)
            med = {v: statistics.median(t) * 1e6 for v, t in times.items()}
            print(f"| {m} | " + " | ".join(f"{med[v]:.1f}" for v in mods) + f" | {med.get('op', float('nan')):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
