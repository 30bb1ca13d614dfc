#!/usr/bin/env python3
"""Benchmark ZipperQuant's CPU kernel for the sparse high-order bits (``mosaic::high_bits_mm``).

    python scripts/bench_zipperquant_cpu.py                       # LLaMA-3-8B shapes, densities 0.5 / 1 / 3 %
    python scripts/bench_zipperquant_cpu.py --shapes o --ms 1,16 --densities 0.01 --threads 2

For each layer shape, density of high-order bits and M, in the same run: the lookup-table kernel (``lut``), the
same kernel multiplying the codes (``direct``), torch's sparse CSR matmul (MKL where the build has it) and
torch's dense float32 matmul of the dense W_hi (``dense``). Median of ``--reps`` timed calls after warm-up,
rotating over copies of the sparse weight that together exceed ``--rotate-mb`` (past the last-level cache).
The high part is synthetic: nonzeros at uniformly random positions with codes uniform in {-2, -1, 1, 2} (their
values do not change the kernel's time; their count and spread do). Also written: the time budget the GPU side
leaves, from the dense W4A16 kernel's H100 timings in ``--gpu-json`` (a bench_kernels result), when given.
Results: ``bench/results/zipperquant_cpu_<date>.{md,json}`` with command, CPU, threads, commit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mosaic_exp.kernels.cpu_lut import PackedHigh, build_cpu_lut, high_bits_mm
from mosaic_exp.logging.environment import result_commit
from mosaic_exp.logging.records import write_bench_result

SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672), "down": (14336, 4096)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def synthetic_high(n: int, k: int, density: float, gs: int, seed: int) -> PackedHigh:
    g = torch.Generator().manual_seed(seed)
    nnz_row = torch.distributions.Binomial(k, torch.full((n,), density)).sample().long().clamp(max=k)
    indptr = torch.zeros(n + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(nnz_row, 0)
    cols = []
    for r in range(n):  # ascending distinct columns per row
        c = torch.randperm(k, generator=g)[: int(nnz_row[r])]
        cols.append(torch.sort(c).values)
    indices = torch.cat(cols).to(torch.int32)
    vals = torch.tensor([-2, -1, 1, 2], dtype=torch.int8)
    codes = vals[torch.randint(0, 4, (indices.numel(),), generator=g)]
    scales = torch.rand(n, math.ceil(k / gs), generator=g) * 1e-2 + 1e-3
    return PackedHigh(out_features=n, in_features=k, group_size=gs, low_bits=4, high_bits=2,
                      indptr=indptr.to(torch.int32), indices=indices, codes=codes, scales=scales)


def coo_of(p: PackedHigh) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols, values) of W_hi = 2^L v_hi s."""
    rows = torch.repeat_interleave(torch.arange(p.out_features), (p.indptr[1:] - p.indptr[:-1]).long())
    cols = p.indices.long()
    return rows, cols, p.codes.float() * 2 ** p.low_bits * p.scales[rows, cols // p.group_size]


def dense_of(p: PackedHigh) -> torch.Tensor:
    rows, cols, vals = coo_of(p)
    w = torch.zeros(p.out_features, p.in_features)
    w[rows, cols] = vals
    return w


def median_us(fn, args_list, reps: int) -> float:
    for a in args_list[:2]:
        fn(a)
    times = []
    for i in range(reps):
        a = args_list[i % len(args_list)]
        t0 = time.perf_counter()
        fn(a)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--ms", default="1,4,16,64")
    ap.add_argument("--densities", default="0.005,0.01,0.03")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--rotate-mb", type=float, default=64.0)
    ap.add_argument("--no-dense", action="store_true", help="skip the dense float32 baseline (slow for gate_up)")
    ap.add_argument("--gpu-json", default=None, help="a bench_kernels JSON: report the GPU dense time beside")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    build_cpu_lut(quiet=True)
    ms = [int(v) for v in a.ms.split(",")]
    dens = [float(v) for v in a.densities.split(",")]
    gpu = {}
    if a.gpu_json:
        for r in json.loads(Path(a.gpu_json).read_text())["rows"]:
            if r.get("variant") == "dense" and r.get("family", "llama3") == "llama3":
                gpu[(r["shape"], r["m"])] = r["time_us"]
    rows = []
    for shape in a.shapes.split(","):
        k, n = SHAPES[shape]
        for d in dens:
            p0 = synthetic_high(n, k, d, 128, seed=hash((shape, d)) % 1000)
            nbytes = p0.indices.numel() * 5 + p0.indptr.numel() * 4 + p0.scales.numel() * 4
            copies = max(2, min(16, math.ceil(a.rotate_mb * 2**20 / max(nbytes, 1))))
            packs = [p0] + [PackedHigh(**{**p0.__dict__, "indices": p0.indices.clone(), "codes": p0.codes.clone(),
                                          "indptr": p0.indptr.clone(), "scales": p0.scales.clone()})
                            for _ in range(copies - 1)]
            csr = [torch.sparse_csr_tensor(p.indptr.long(), p.indices.long(), coo_of(p)[2], size=(n, k))
                   for p in packs]
            w_dense = None if a.no_dense else dense_of(p0)
            for m in ms:
                x = torch.randn(m, k)
                row = {"shape": shape, "k": k, "n": n, "density": d, "nnz": p0.indices.numel(), "m": m,
                       "lut_us": median_us(lambda p, x=x: high_bits_mm(x, p, lut=True), packs, a.reps),
                       "direct_us": median_us(lambda p, x=x: high_bits_mm(x, p, lut=False), packs, a.reps),
                       "torch_csr_us": median_us(lambda s, x=x: (s @ x.T), csr, a.reps)}
                if w_dense is not None:
                    row["dense_us"] = median_us(lambda w, x=x: x @ w.T, [w_dense], max(5, a.reps // 3))
                if (shape, m) in gpu:
                    row["gpu_dense_w4_us"] = gpu[(shape, m)]
                rows.append(row)
                print(json.dumps(row), flush=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    commit = result_commit(ROOT)
    meta = {"command": "python " + " ".join([Path(sys.argv[0]).relative_to(ROOT).as_posix()
                                             if Path(sys.argv[0]).is_absolute() else sys.argv[0], *sys.argv[1:]]),
            "cpu": cpu_name(), "threads": a.threads, "date_utc": stamp, "commit": commit,
            "torch": torch.__version__, "method": f"median of {a.reps} calls after 2 warm-up calls, rotating over "
                                                  f"copies of the sparse weight past {a.rotate_mb:.0f} MB"}
    table = ["us per call (median); ratios = torch CSR time / ours (> 1: ours faster)", "",
             ("| shape | density | nnz | M | lut | direct | torch CSR | dense fp32 | CSR/lut | CSR/direct | lut/direct "
              "| GPU dense W4 (H100) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['shape']} | {r['density']:.3f} | {r['nnz']} | {r['m']} | {r['lut_us']:.0f} | "
                     f"{r['direct_us']:.0f} | {r['torch_csr_us']:.0f} | {r.get('dense_us', float('nan')):.0f} | "
                     f"{r['torch_csr_us'] / r['lut_us']:.2f} | {r['torch_csr_us'] / r['direct_us']:.2f} | "
                     f"{r['lut_us'] / r['direct_us']:.2f} | {r.get('gpu_dense_w4_us', float('nan')):.1f} |")
    md = write_bench_result(a.out, f"zipperquant_cpu_{stamp}", f"ZipperQuant CPU high-bits kernel ({stamp})",
                            meta, rows, table)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
