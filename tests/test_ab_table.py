"""native/exp/ab_table.py: the same-call A/B table parses probe logs and compares variants to the first."""
from __future__ import annotations

from tests.conftest import load_script

ab = load_script("ab_table", "native/exp")

LOG_A = """variant G0 (gemv_kernels.o ): python3 native/exp/probe_gemv.py --ms 1 --plans '' --runs default  commit x
device NVIDIA H100 80GB HBM3  budget 0.03
== qkv K=4096 N=6144 M=1: cublas 20.8 us (2 TFLOP/s)
  dense   default             8.0 us   2.60x      6 TFLOP/s  gemv-dense[mb1,warps16,kparts8,splitk1,ring4,pdl-early]
  zipper  default            10.0 us   2.08x      5 TFLOP/s  gemv-zipper[mb1,warps8,kparts8,splitk1,ring4,pdl-early]
== o K=4096 N=4096 M=1: cublas 16.4 us (2 TFLOP/s)
  dense   default             6.0 us   2.73x      6 TFLOP/s  gemv-dense[mb1,warps16,kparts16,splitk1,ring4,pdl-early]
  zipper  default            FAILED RuntimeError: boom
"""
LOG_B = LOG_A.replace("G0", "GZW").replace(" 8.0 us", " 6.0 us").replace("10.0 us", "12.5 us").replace(
    " 6.0 us   2.73x", " 3.0 us   5.47x").replace("FAILED RuntimeError: boom",
                                                 "           9.0 us   1.82x      4 TFLOP/s  gemv-zipper[mb1,wptr]")


def test_parse_rows_and_skips_failures():
    first, rows = ab.parse(LOG_A)
    assert first.startswith("variant G0")
    assert rows[("qkv", 6144, 4096, 1, "dense", "default")] == (8.0, "gemv-dense[mb1,warps16,kparts8,splitk1,ring4,pdl-early]")
    assert ("o", 4096, 4096, 1, "zipper", "default") not in rows  # a FAILED line is no row
    assert len(rows) == 3


def test_table_ratios_and_geomeans():
    md = ab.table([("G0", LOG_A), ("GZW", LOG_B)])
    assert "| qkv 4096->6144 | 1 | dense | default | 8.0 | 6.0 (0.750) |" in md
    assert "| qkv 4096->6144 | 1 | zipper | default | 10.0 | 12.5 (1.250) |" in md
    # a row only the second variant has: shown, no ratio, not in the geomean
    assert "| o 4096->4096 | 1 | zipper | default |  | 9.0 |" in md
    # dense geomean over qkv (0.75) and o (0.5): sqrt(0.375)
    assert "| dense | default | 1 | 0.612 (2) |" in md
    assert "| zipper | default | 1 | 1.250 (1) |" in md
