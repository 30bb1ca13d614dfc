"""The native ZipperEngine module compiles (CI has nvcc but no GPU).

Builds into a temporary directory with scripts/build_native.py (kernel TU with nvcc for
sm_90a, the pybind11 binding with the host compiler, in parallel; about a minute on 2 cores)
and imports the result: loading needs no GPU, and the binding's argument checks run on the CPU.
Skipped with a reason when nvcc, a host compiler or pybind11 is missing.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def _skip_reason() -> str | None:
    import build_native

    if build_native.find_nvcc() is None:
        return "nvcc not found"
    if not (shutil.which("g++") or shutil.which("c++")):
        return "no host C++ compiler"
    if importlib.util.find_spec("pybind11") is None:
        return "pybind11 not installed"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "Python headers not installed"
    return None


@pytest.mark.timeout(300)
def test_native_module_compiles_and_imports(tmp_path):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    import build_native

    so = build_native.build(tmp_path, "90a", quiet=True)
    assert so.exists() and so.stat().st_size > 0
    spec = importlib.util.spec_from_file_location("_mosaic_native", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from mosaic_exp.kernels.native import ABI_VERSION

    assert mod.ABI_VERSION == ABI_VERSION and mod.NUM_CONFIGS >= 4
    assert tuple(mod.COMPACT_CLUSTER_FIXUP) == (1, 1)  # NOTES.md v18's compact cluster fix-up is the default
    c = mod.config(0, 1)
    assert c["bm"] == 16 and c["bn"] == 64 and c["smem_bytes"] > 0
    # argument validation happens before any CUDA call and names m, n, k
    with pytest.raises(ValueError, match=r"m=4, n=256, k=250"):
        mod.gemm(16, 16, 16, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 1, 4, 256, 250, 256, 256, 1, 1, 4, 0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"m=0, n=256, k=256"):
        mod.gemm(16, 16, 16, 0, 0, 0, 16, 0, 0, 0, 16, 0, 0, 0, 1, 0, 256, 256, 256, 256, 1, 1, 4, 0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"m=2, n=256, k=250"):  # small-M kernel: same checks
        mod.gemv(16, 16, 16, 0, 0, 0, 0, 0, 16, 2, 256, 250, 256, 256, 1, 1, 4, 8, 1, 0, 0, 0, 0, 1)
    with pytest.raises(ValueError, match=r"kparts=3 must divide warps=8"):
        mod.gemv(16, 16, 16, 0, 0, 0, 0, 0, 16, 2, 256, 256, 256, 256, 1, 3, 4, 8, 1, 0, 0, 0, 0, 1)
    with pytest.raises(ValueError, match=r"mb must be 1, 2 or 4 \(8, 16 or 32 rows of M per CTA\), got 3"):
        mod.gemv(16, 16, 16, 0, 0, 0, 0, 0, 16, 20, 256, 256, 256, 256, 1, 1, 4, 8, 3, 0, 0, 0, 0, 1)
    with pytest.raises(ValueError, match=r"m=2, n=256, k=256\): pdl must be 0 \(off\), 1"):
        mod.gemv(16, 16, 16, 0, 0, 0, 0, 0, 16, 2, 256, 256, 256, 256, 1, 1, 4, 8, 1, 0, 0, 0, 7, 1)
    with pytest.raises(ValueError, match=r"m=300, n=256, k=250"):  # large-M kernel: same checks
        mod.wgmma(16, 16, 16, 0, 0, 0, 0, 0, 16, 300, 256, 250, 256, 256, 1, 128, 1, 0, 0)
    with pytest.raises(ValueError, match=r"token tile bt must be 8, 16, 32, 64, 128 or 256, got 96"):
        mod.wgmma(16, 16, 16, 0, 0, 0, 0, 0, 16, 300, 256, 256, 256, 256, 1, 96, 1, 0, 0)
    with pytest.raises(ValueError, match=r"res_bits is a null pointer"):
        mod.wgmma(16, 16, 16, 0, 16, 16, 0, 16, 16, 300, 256, 256, 256, 256, 1, 128, 1, 1, 0)
    with pytest.raises(ValueError, match=r"wgs must be 2, 3 \(warp-specialized\) or 4, got 5"):
        mod.wgmma(16, 16, 16, 0, 0, 0, 0, 0, 16, 300, 256, 256, 256, 256, 1, 128, 1, 0, 0, 0, 5)
    with pytest.raises(ValueError, match=r"bt 256 is a warp-specialized tile: wgs must be 3, got 2"):
        mod.wgmma(16, 16, 16, 0, 0, 0, 0, 0, 16, 300, 256, 256, 256, 256, 1, 256, 1, 0, 0, 0, 2)
    with pytest.raises(ValueError, match=r"bt 8 is a warp-specialized tile: wgs must be 3, got 4"):
        mod.wgmma(16, 16, 16, 0, 0, 0, 0, 0, 16, 3, 256, 256, 256, 256, 1, 8, 1, 0, 0, 0, 4)
    # the large warp-specialized tiles' split-K meets in a global workspace (NOTES.md v26): required
    with pytest.raises(ValueError, match=r"m=300, n=256, k=4096\): workspace is a null pointer"):
        mod.wgmma(16, 16, 16, 0, 0, 0, 0, 0, 16, 300, 256, 4096, 256, 4096, 1, 128, 1, 0, 0, 0, 3, 2)
    # balanced split ranges only for a split large warp-specialized tile (NOTES.md v28)
    with pytest.raises(ValueError, match=r"split_bounds needs a split warp-specialized bt 128 / 256 tile, got bt 64"):
        mod.wgmma(16, 16, 16, 0, 0, 0, 0, 0, 16, 300, 256, 4096, 256, 4096, 1, 64, 1, 0, 0, 0, 2, 2, split_bounds=16)
    with pytest.raises(ValueError, match=r"wgmma splitk must be in \[1, min\(8, k-tiles\)\], got 9"):
        mod.wgmma(16, 16, 16, 0, 0, 0, 0, 0, 16, 300, 256, 4096, 256, 4096, 1, 64, 1, 0, 0, 0, 2, 9)
    # SASS: tensor-core MMAs and cp.async are there, no local-memory spills in the kernels
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump:
        import subprocess

        sass = subprocess.run([cuobjdump, "-sass", str(tmp_path / "zipper_kernels.o")], capture_output=True,
                              text=True, check=False).stdout
        assert "HMMA.16816.F32" in sass and "LDGSTS" in sass
        wsass = subprocess.run([cuobjdump, "-sass", str(tmp_path / "wgmma_kernels.o")], capture_output=True,
                               text=True, check=False).stdout
        assert "HGMMA.64x128x16.F32" in wsass and "HGMMA.64x64x16.F32" in wsass and "HGMMA.64x8x16.F32" in wsass


def test_bad_define_is_rejected_before_compiling(tmp_path):
    import build_native

    for bad in ("", "1X=1", "A B", "=3"):
        with pytest.raises(ValueError, match="NAME or NAME=VALUE"):
            build_native.build(tmp_path, "90a", defines=(bad,))
    assert not any(tmp_path.iterdir())  # nothing was built


def test_bad_tu_selection_is_rejected_before_compiling(tmp_path):
    import build_native

    with pytest.raises(ValueError, match="kernel TUs must be among"):
        build_native.build(tmp_path, "90a", tus=("zipper_kernels", "nope"), objects_only=True)
    with pytest.raises(ValueError, match="needs every kernel TU"):
        build_native.build(tmp_path, "90a", tus=("zipper_kernels",))
    assert not any(tmp_path.iterdir())


@pytest.mark.timeout(300)
def test_objects_only_builds_just_the_chosen_tu(tmp_path):
    """A variant's objects for the device A/B stage: one kernel TU, no binding, no module."""
    import build_native

    if build_native.find_nvcc() is None:
        pytest.skip("nvcc not found")
    assert build_native.build(tmp_path, "90a", quiet=True, tus=("gemv_kernels",), objects_only=True) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemv_kernels.o"]
