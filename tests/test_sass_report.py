"""scripts/sass_report.py: SASS parsing on a fixed snippet, and (with nvcc and nvdisasm present) a real
kernel compiled and reported end to end."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("sass_report", ROOT / "scripts" / "sass_report.py")
sass_report = importlib.util.module_from_spec(_spec)
sys.modules["sass_report"] = sass_report
_spec.loader.exec_module(sass_report)

SNIPPET = """
\t.headerflags\t@"EF_CUDA_SM90"
.text._Z3fooPf:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
.L_x_1:
        /*0020*/                   LDG.E R2, desc[UR4][R4.64] ;
        /*0030*/              @!P0 BRA `(.L_x_2) ;
        /*0040*/                   HMMA.16816.F32.BF16 R8, R12, R14, R8 ;
.L_x_2:
        /*0050*/                   ISETP.NE.AND P1, PT, R0, RZ, PT ;
        /*0060*/               @P1 BRA `(.L_x_1) ;
        /*0070*/                   EXIT ;
.text._Z3barv:
        /*0000*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0010*/                   EXIT ;
"""

PTXAS = """ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90a'
ptxas info    : Function properties for _Z3fooPf
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers
ptxas info    : Compiling entry function '_Z3barv' for 'sm_90a'
ptxas info    : Function properties for _Z3barv
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 1 barriers
"""


def test_split_functions_loops_and_histogram():
    funcs = sass_report.split_functions(SNIPPET)
    assert set(funcs) == {"_Z3fooPf", "_Z3barv"}
    foo = funcs["_Z3fooPf"]
    assert len(foo.instrs) == 8 and foo.labels == {".L_x_1": 0x20, ".L_x_2": 0x50}
    # one loop: .L_x_1 (0x20) .. the backward branch at 0x60; the forward branch is not a loop
    assert foo.loops() == [(0x20, 5)]
    h = foo.histogram()
    assert h["HMMA"] == 1 and h["BRA"] == 2 and h["LDG"] == 1 and h["S2R"] == 1 and h["LDC"] == 1
    assert funcs["_Z3barv"].loops() == [] and funcs["_Z3barv"].histogram()["BAR"] == 1


def test_parse_ptxas_and_report_match():
    regs = sass_report.parse_ptxas(PTXAS)
    assert regs == {"_Z3fooPf": (40, (4, 12)), "_Z3barv": (8, (0, 0))}
    ks = sass_report.report(SNIPPET, PTXAS, "foo")
    assert [k.name for k in ks] == ["_Z3fooPf"] and ks[0].regs == 40 and ks[0].spill == (4, 12)


KERNEL = r"""
__global__ void axpy_loop(float* y, const float* x, float a, int n, int reps) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float v = y[i];
  for (int r = 0; r < reps; ++r) v = fmaf(a, x[(i + r) % n], v);
  y[i] = v;
}
"""


def test_real_kernel_end_to_end(tmp_path, capsys):
    if sass_report.build_native.find_nvcc() is None:
        pytest.skip("nvcc not found")
    if sass_report.find_nvdisasm() is None:
        pytest.skip("nvdisasm not found (pip install -e '.[sass]')")
    tu = tmp_path / "k.cu"
    tu.write_text(KERNEL)
    rc = sass_report.main([str(tu), "--match", "axpy_loop", "--dump", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "axpy_loop(float*, float const*, float, int, int)" in out and "registers, spill 0/0 B" in out
    assert "loops (start: static instructions, longest first): @0x" in out  # the reps loop
    assert (tmp_path / "d" / "0.sass").read_text().count("FFMA") >= 1
    assert sass_report.main([str(tu), "--match", "no_such_kernel"]) == 1


@pytest.mark.timeout(420)
def test_compact_cluster_fixup_switch_compiles_both_ways():
    """NOTES.md v18's switch: the default build's kernels are the compact ones (the dense cfg6 tile ~3.6k static
    instructions, the wgmma bt 64 / 2-warpgroup tile ~3.9k: under 6k), and -DMOSAIC_COMPACT_CLUSTER_FIXUP=0 (the
    v17 form, kept for A/B) still compiles in both kernel TUs with the unrolled fix-up (~14.2k / ~11.6k: over 9k)."""
    from concurrent.futures import ThreadPoolExecutor

    if sass_report.build_native.find_nvcc() is None:
        pytest.skip("nvcc not found")
    if sass_report.find_nvdisasm() is None:
        pytest.skip("nvdisasm not found (pip install -e '.[sass]')")
    cases = {"zipper_kernels": r"w4a16_kernelI13__nv_bfloat16Li4ELi2ELi0ELi4ELi1ELi1E",
             "wgmma_kernels": r"w4a16_wgmma_kernelI13__nv_bfloat16Li64ELi2ELi0E"}
    builds = [(tu, d) for tu in cases for d in ((), ("MOSAIC_COMPACT_CLUSTER_FIXUP=0",))]
    with ThreadPoolExecutor(2) as ex:
        out = dict(zip(builds, ex.map(lambda b: sass_report.compile_and_disassemble(
            ROOT / "native" / f"{b[0]}.cu", defines=b[1]), builds)))
    for (tu, defines), sass in out.items():
        ks = sass_report.report(*sass, cases[tu])
        assert len(ks) == 1, (tu, defines, [k.name for k in ks])
        n = len(ks[0].instrs)
        assert (9000 < n if defines else 1000 < n < 6000), (tu, defines, n)


@pytest.mark.timeout(420)
def test_bounded_zipper_configs_within_their_bounds():
    """cfg 10 / 11 / 12 (NOTES.md v20 / v21): their zipper kernels have the intended stages (3 / 5 / 4) and bound
    (5 / 5 / 4 CTAs per SM) and fit that many CTAs of 128 threads per SM by registers without spilling: the whole
    point of them; the cfg 2 / 4 zippers keep theirs (4 stages, no bound / 6 stages, 4 per SM)."""
    if sass_report.build_native.find_nvcc() is None:
        pytest.skip("nvcc not found")
    if sass_report.find_nvdisasm() is None:
        pytest.skip("nvdisasm not found (pip install -e '.[sass]')")
    # the default build (balanced split-K ranges, NOTES.md v22) and the pre-v22 one: both must keep the bounds
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as ex:
        builds = list(ex.map(lambda d: sass_report.compile_and_disassemble(ROOT / "native" / "zipper_kernels.cu",
                                                                         defines=d), ((), ("MOSAIC_BALANCED_SPLITK=0",))))
    for sass, ptxas in builds:
        _check_bounded_zippers(sass, ptxas)


def _check_bounded_zippers(sass, ptxas):
    # <T, MT, NW, MODE = 1 (zipper), STAGES, WK = 1, TPI = 1, MINB>
    # (kernel, CTAs per SM it must fit by registers, whether it does)
    for pat, ctas, fits in ((r"w4a16_kernelI13__nv_bfloat16Li4ELi1ELi1ELi3ELi1ELi1ELi5EE", 5, True),
                            (r"w4a16_kernelI13__nv_bfloat16Li1ELi2ELi1ELi5ELi1ELi1ELi5EE", 5, True),
                            (r"w4a16_kernelI13__nv_bfloat16Li2ELi2ELi1ELi4ELi1ELi1ELi4EE", 4, True),  # cfg 12
                            (r"w4a16_kernelI13__nv_bfloat16Li4ELi1ELi1ELi4ELi1ELi1ELi0EE", 5, False),
                            (r"w4a16_kernelI13__nv_bfloat16Li1ELi2ELi1ELi6ELi1ELi1ELi4EE", 5, False)):
        ks = sass_report.report(sass, ptxas, pat)
        assert len(ks) == 1, (pat, [k.name for k in ks])
        assert ks[0].regs is not None and ks[0].spill == (0, 0), (pat, ks[0].regs, ks[0].spill)
        assert (ks[0].regs <= 65536 // (ctas * 128)) == fits, (pat, ks[0].regs)
