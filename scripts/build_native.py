#!/usr/bin/env python3
"""Build the ZipperEngine native module (raw nvcc + pybind11, no torch C++ extension).

    python scripts/build_native.py                 # -> native/build/_mosaic_native<EXT_SUFFIX>
    python scripts/build_native.py --arch 90a,80   # add sm_80 code (doubles compile time)
    python scripts/build_native.py --ptxas-verbose # register / spill report
    python scripts/build_native.py --out native/build/B --objects-only --tus zipper_kernels -D SWITCH=1
                                                   # one TU's object of a compile-time variant, for the
                                                   # device script's A/B stage (native/exp/probe_variants.sh)
    python scripts/build_native.py --cpu-only      # only ZipperQuant's CPU kernel (g++, no nvcc): native/build/_mosaic_cpu*

The kernel TUs and the binding TU compile in parallel, then nvcc links them; a full build also builds the CPU
module of ZipperQuant's high-order bits (native/cpu, mosaic_exp.kernels.cpu_lut.build_cpu_lut).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"
MODULE = "_mosaic_native"
KERNEL_TUS = ("zipper_kernels", "gemv_kernels", "wgmma_kernels")  # tiled, small-M, large-M (sm_90a)


def gencode_flags(archs: str) -> list[str]:
    flags = []
    for a in archs.split(","):
        a = a.strip()
        if a:
            flags.append(f"-gencode=arch=compute_{a},code=sm_{a}")
    return flags


def find_nvcc() -> str | None:
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    return None


def build(out_dir: Path, archs: str, ptxas_verbose: bool = False, quiet: bool = False, reuse: bool = False,
          defines: tuple[str, ...] = (), tus: tuple[str, ...] = KERNEL_TUS, objects_only: bool = False) -> Path:
    """Compile the kernel TUs `tus` (and the binding) into out_dir and link the module; with objects_only, only
    the kernel objects (a variant's, to stand in for the default ones at link time). Returns the module path
    (objects_only: out_dir)."""
    for d in defines:  # compile-time variants of the kernels (e.g. NOTES.md v18's experiment switch)
        if not d or not d.split("=", 1)[0].isidentifier():
            raise ValueError(f"a define must be NAME or NAME=VALUE, got {d!r}")
    unknown = [t for t in tus if t not in KERNEL_TUS]
    if unknown or not tus:
        raise ValueError(f"kernel TUs must be among {', '.join(KERNEL_TUS)}, got {', '.join(tus) or 'none'}")
    if not objects_only and set(tus) != set(KERNEL_TUS):
        raise ValueError("linking the module needs every kernel TU; pass objects_only for a subset")
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (set NVCC or put it on PATH)")
    import pybind11

    out_dir.mkdir(parents=True, exist_ok=True)
    py_inc = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    target = out_dir / f"{MODULE}{suffix}"
    common = ["-O3", "-std=c++17", "-Xcompiler", "-fPIC", f"-I{NATIVE}"]
    gen = gencode_flags(archs)
    defs = [f"-D{d}" for d in defines]
    kern_cmds = []
    for tu in tus:
        obj = out_dir / f"{tu}.o"
        if reuse and obj.exists() and obj.stat().st_mtime >= max(p.stat().st_mtime for p in NATIVE.glob("*.cu*")):
            continue  # --reuse-objects: an object newer than every native source stays
        cmd = [nvcc, *common, *defs, *gen, "-lineinfo", "-c", str(NATIVE / f"{tu}.cu"), "-o", str(out_dir / f"{tu}.o")]
        if ptxas_verbose:
            cmd.insert(1, "-Xptxas=-v")
        kern_cmds.append(cmd)
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("no host C++ compiler (g++/c++) found")
    # The binding has no device code: the host compiler builds it much faster than nvcc would.
    bind_cmd = [cxx, "-O2", "-std=c++17", "-fPIC", "-fvisibility=hidden", f"-I{NATIVE}",
                f"-I{pybind11.get_include()}", f"-I{py_inc}", "-c", str(NATIVE / "bindings.cpp"),
                "-o", str(out_dir / "bindings.o")]
    link_cmd = [nvcc, "-shared", *gen, *(str(out_dir / f"{tu}.o") for tu in KERNEL_TUS), str(out_dir / "bindings.o"),
                "-o", str(target)]

    def run(cmd):
        t0 = time.time()
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return cmd, r, time.time() - t0

    t0 = time.time()
    cmds = kern_cmds if objects_only else [*kern_cmds, bind_cmd]
    with ThreadPoolExecutor(max(1, len(cmds))) as ex:
        results = list(ex.map(run, cmds))
    if not objects_only:
        results.append(run(link_cmd))
    for cmd, r, dt in results:
        if not quiet:
            print(f"[{dt:5.1f}s] {' '.join(cmd)}", flush=True)
            if r.stdout.strip() or (r.stderr.strip() and (ptxas_verbose or r.returncode)):
                print(r.stdout + r.stderr, flush=True)
        if r.returncode:
            raise RuntimeError(f"native build failed (rc={r.returncode}):\n{' '.join(cmd)}\n{r.stderr[-4000:]}")
    if not quiet:
        print(f"built {out_dir if objects_only else target} in {time.time() - t0:.1f}s", flush=True)
    return out_dir if objects_only else target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(NATIVE / "build"))
    ap.add_argument("--arch", default=os.environ.get("MOSAIC_NATIVE_ARCHS", "90a"),
                    help="comma-separated compute capabilities, e.g. 90a or 90a,80")
    ap.add_argument("--ptxas-verbose", action="store_true")
    ap.add_argument("--reuse-objects", action="store_true",
                    help="keep kernel objects newer than every native source (e.g. built on another host for "
                         "the same archs); the binding is always rebuilt for this Python")
    ap.add_argument("-D", "--define", action="append", default=[], metavar="NAME[=VALUE]",
                    help="a preprocessor define for the kernel TUs (repeatable), for variant builds: "
                         "--out native/build/A -D MOSAIC_COMPACT_CLUSTER_FIXUP=0")
    ap.add_argument("--tus", default=",".join(KERNEL_TUS), help="kernel TUs to compile (a subset needs --objects-only)")
    ap.add_argument("--objects-only", action="store_true", help="compile the kernel objects only: no binding, no link")
    ap.add_argument("--cpu-only", action="store_true", help="build only the CPU high-bits module (no nvcc needed)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU high-bits module")
    a = ap.parse_args()
    if a.cpu_only or not (a.no_cpu or a.objects_only):
        sys.path.insert(0, str(ROOT))
        from mosaic_exp.kernels.cpu_lut import build_cpu_lut

        t0 = time.time()
        print(f"built {build_cpu_lut(Path(a.out))} in {time.time() - t0:.1f}s", flush=True)
        if a.cpu_only:
            return 0
    try:
        build(Path(a.out), a.arch, a.ptxas_verbose, reuse=a.reuse_objects, defines=tuple(a.define),
              tus=tuple(t for t in a.tus.split(",") if t), objects_only=a.objects_only)
    except ValueError as e:
        ap.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
