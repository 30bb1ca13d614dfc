"""ZipperQuant's CPU kernel (``native/cpu/high_bits_lut.cpp``): the sparse high-order bits times X.

    y = high_bits_mm(x, packed)     x [M, K] (any float dtype, CPU) -> float32 [M, N] = x . W_hi^T

``PackedHigh`` holds a BitSplitWeight's high part as the kernel reads it (CSR int32 / int8, float32 scales).
The module is compiled with g++ against torch's headers (``build_cpu_lut``; ``scripts/build_native.py`` builds it
with the CUDA module, ``--cpu-only`` alone) into ``native/build``; nothing is compiled or loaded at import time,
and a missing build raises :class:`CpuKernelUnavailable` naming the command, never a silent fallback.
``mosaic::high_bits_mm`` is the ``torch.library`` op (with a fake implementation for ``torch.compile``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

from mosaic_exp.formats import BitSplitWeight
from mosaic_exp.quant.quantizer import effective_group_size

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "native" / "cpu" / "high_bits_lut.cpp"
MODULE = "_mosaic_cpu"
ABI_VERSION = 1
KERNEL_NAME = "mosaic::high_bits_mm"  # what BitSplitLinear reports for this kernel

_state: dict = {}


class CpuKernelUnavailable(RuntimeError):
    """The CPU high-bits kernel is not built or cannot load here."""


def module_path(out_dir: Path | None = None) -> Path:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return (out_dir or ROOT / "native" / "build") / f"{MODULE}{suffix}"


def build_stamp() -> dict:
    """What a built module is only valid for: this torch (headers, libraries, their path) and this CPU model
    (``-march=native``). A module carried to another machine (``native/build`` travels to the device) is rebuilt."""
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith(("model name", "flags"))), "")
    except OSError:
        pass
    return {"torch": torch.__version__, "torch_dir": str(Path(torch.__file__).parent), "cpu": cpu,
            "source_mtime": SOURCE.stat().st_mtime}


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".stamp.json")


def _stamp_ok(target: Path) -> bool:
    try:
        return target.exists() and json.loads(_stamp_path(target).read_text()) == build_stamp()
    except (OSError, ValueError):
        return False


def build_cpu_lut(out_dir: Path | None = None, quiet: bool = False, force: bool = False) -> Path:
    """Compile the kernel with g++ (``CXX``) into ``out_dir`` (default native/build); skipped when up to date
    (same source, torch and CPU model: ``build_stamp``)."""
    from torch.utils.cpp_extension import include_paths, library_paths

    target = module_path(out_dir)
    if not force and _stamp_ok(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    cxx = os.environ.get("CXX", "g++")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    cmd = [cxx, "-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp", str(SOURCE), "-o", str(target),
           f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-DTORCH_EXTENSION_NAME={MODULE}", "-DTORCH_API_INCLUDE_EXTENSION_H",
           f"-I{sysconfig.get_paths()['include']}", *[f"-I{p}" for p in include_paths()],
           *[f"-L{p}" for p in library_paths()], *[f"-Wl,-rpath,{p}" for p in library_paths()],
           "-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]
    if not quiet:
        print(" ".join(cmd), flush=True)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise CpuKernelUnavailable(f"C++ compiler {cxx!r} not found (set CXX)") from e
    if res.returncode != 0:
        raise CpuKernelUnavailable(f"building {SOURCE.name} failed:\n{res.stderr[-4000:]}")
    _stamp_path(target).write_text(json.dumps(build_stamp()))
    reset()
    return target


def load_cpu_lut():
    """The compiled module, or :class:`CpuKernelUnavailable` with the reason (loaded once)."""
    if "module" in _state:
        return _state["module"]
    env = os.environ.get("MOSAIC_CPU_LUT_PATH")
    path = Path(env) if env else module_path()
    if not path.exists():
        raise CpuKernelUnavailable(f"CPU high-bits kernel not built (looked for {path}; build it with "
                                   f"`python scripts/build_native.py --cpu-only`)")
    if not env and not _stamp_ok(path):
        raise CpuKernelUnavailable(f"CPU high-bits kernel at {path} was built for another torch, CPU or source "
                                   f"version: rebuild with `python scripts/build_native.py --cpu-only`")
    try:
        spec = importlib.util.spec_from_file_location(MODULE, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except Exception as e:
        raise CpuKernelUnavailable(f"CPU high-bits kernel at {path} failed to load: {type(e).__name__}: {e}") from e
    if getattr(mod, "ABI_VERSION", None) != ABI_VERSION:
        raise CpuKernelUnavailable(f"CPU high-bits kernel at {path} has ABI {getattr(mod, 'ABI_VERSION', None)}, "
                                   f"want {ABI_VERSION}: rebuild")
    _state["module"], _state["path"] = mod, str(path)
    return mod


def reset() -> None:
    _state.clear()


@dataclass
class PackedHigh:
    """A BitSplitWeight's high-order part as the CPU kernel reads it (all on the CPU)."""
    out_features: int
    in_features: int
    group_size: int       # effective (per-channel: K)
    low_bits: int
    high_bits: int        # B - L
    indptr: torch.Tensor  # int32 [N + 1]
    indices: torch.Tensor  # int32 [nnz]
    codes: torch.Tensor   # int8 [nnz]
    scales: torch.Tensor  # float32 [N, G]

    @classmethod
    def from_weight(cls, w: BitSplitWeight) -> PackedHigh:
        return cls(out_features=w.out_features, in_features=w.in_features,
                   group_size=effective_group_size(w.in_features, w.group_size), low_bits=w.low.bits,
                   high_bits=w.bits - w.low.bits, indptr=w.high_indptr.cpu().contiguous(),
                   indices=w.high_indices.cpu().contiguous(), codes=w.high_codes.cpu().contiguous(),
                   scales=w.low.base_scales.float().cpu().contiguous())


@torch.library.custom_op("mosaic::high_bits_mm", mutates_args=(), device_types="cpu")
def _high_bits_mm_op(x: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor, codes: torch.Tensor,
                     scales: torch.Tensor, group_size: int, low_bits: int, high_bits: int, lut: bool) -> torch.Tensor:
    return load_cpu_lut().high_bits_mm(x, indptr, indices, codes, scales, group_size, low_bits, high_bits, lut)


@_high_bits_mm_op.register_fake
def _(x, indptr, indices, codes, scales, group_size, low_bits, high_bits, lut):
    return x.new_empty((x.shape[0], indptr.shape[0] - 1), dtype=torch.float32)


def high_bits_mm(x: torch.Tensor, p: PackedHigh, lut: bool = True) -> torch.Tensor:
    """x [..., K] on the CPU (float32 / float16 / bfloat16) -> float32 [..., N] = x . W_hi^T.

    lut: products from the lookup table (the paper's kernel); False multiplies the code per nonzero (baseline)."""
    if x.device.type != "cpu":
        raise ValueError(f"high_bits_mm runs on the CPU; x is on {x.device}")
    if x.shape[-1] != p.in_features:
        raise ValueError(f"high_bits_mm: x has k={x.shape[-1]}, the weight has k={p.in_features} "
                         f"(n={p.out_features})")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, p.in_features).float().contiguous()
    y = _high_bits_mm_op(x2, p.indptr, p.indices, p.codes, p.scales, p.group_size, p.low_bits, p.high_bits, lut)
    return y.reshape(*lead, p.out_features)


def high_bits_reference(x: torch.Tensor, w: BitSplitWeight) -> torch.Tensor:
    """x . W_hi^T in float64 from the dense W_hi (the tests' reference)."""
    return (x.double() @ w.high_dense().double().to(x.device).T)
