"""The kernel benchmark's report (scripts/bench_kernels.py): issue 4's targets judged from result rows.
No GPU: the rows are synthetic, with times chosen so that each target sits just above or below its bound."""

from __future__ import annotations

import json

import pytest

from tests.conftest import load_script

bench = load_script("bench_kernels")


def rows_for(times: dict[str, float], ms=(1,), shapes=None) -> list[dict]:
    """One row per LLaMA-3 shape, M and variant with the same time on every shape (so geomeans are exact)."""
    out = []
    for name, k, n in shapes or bench.SHAPES["llama3"]:
        for m in ms:
            for variant, t in times.items():
                budget = float(variant.split("@")[1]) if "@" in variant else None
                out.append({"shape": name, "k": k, "n": n, "m": m, "variant": variant, "budget": budget,
                            "time_us": t, "gbps": 1.0, "tflops": 1.0, "bytes": 1, "roofline_us": 1.5,
                            "frac_of_roofline": 1.5 / t, "kernels": [f"k-{variant}"], "family": "llama3"})
    return out


BASE = {"cublas": 30.0, "torch_int4": 12.0, "dense": 9.5, "zipper@0.03": 10.0, "separate@0.1": 13.0,
        "zipper@0.1": 10.0}


def by_target(out: list[dict]) -> dict[str, dict]:
    return {o["target"]: o for o in out}


def test_every_target_met_at_its_bound():
    _, out = bench.targets_report(rows_for(BASE))
    t = by_target(out)
    assert t["zipper@0.03 vs cuBLAS >= 3x at M=1"]["met"] is True  # 30 / 10 = 3.0 exactly
    assert t["zipper@0.03 vs cuBLAS >= 2.5x at M=16"]["met"] is None  # M = 16 not measured: not judged
    assert t["residual overhead of zipper@0.03 vs dense <= 6 %"]["met"] is True  # 10 / 9.5 = +5.3 %
    assert t["residual overhead of zipper@0.1 vs dense <= 12 %"]["met"] is True
    assert t["zipper@0.1 >= 1.3x faster than separate@0.1 at M <= 16"]["met"] is True  # 13 / 10
    assert t["zipper@0.03 faster than torch int4 at every M"]["met"] is True


def test_missed_targets_and_what_each_shape_needs():
    times = dict(BASE, **{"zipper@0.03": 10.5, "dense": 9.0, "separate@0.1": 12.5, "torch_int4": 10.5})
    lines, out = bench.targets_report(rows_for(times))
    t = by_target(out)
    sp = t["zipper@0.03 vs cuBLAS >= 3x at M=1"]
    assert sp["met"] is False and sp["value"] == pytest.approx(30 / 10.5)
    assert t["residual overhead of zipper@0.03 vs dense <= 6 %"]["met"] is False  # +16.7 %
    assert t["zipper@0.1 >= 1.3x faster than separate@0.1 at M <= 16"]["met"] is False  # 1.25x
    assert t["zipper@0.03 faster than torch int4 at every M"]["met"] is False  # equal is not faster
    text = "\n".join(lines)
    assert "### Missed: zipper@0.03 2.86x < 3x at M=1" in text
    # every shape needs cuBLAS / 3 = 10.0 us and is 10.5 / 10 = 1.05x off, on the kernel that ran
    assert text.count("| 30.0 | 10.0 | 10.5 | 1.05x | 1.5 | k-zipper@0.03 |") == 4


def test_one_shape_missing_leaves_the_target_unjudged():
    shapes = bench.SHAPES["llama3"][:3]
    _, out = bench.targets_report(rows_for(BASE, shapes=shapes))
    assert by_target(out)["zipper@0.03 vs cuBLAS >= 3x at M=1"]["met"] is None


def test_overhead_target_names_the_m_where_it_holds():
    rows = rows_for(BASE, ms=(1,)) + rows_for(dict(BASE, dense=8.0), ms=(16,))
    _, out = bench.targets_report(rows)
    o = by_target(out)["residual overhead of zipper@0.03 vs dense <= 6 %"]
    assert o["met"] is False and "met at M = 1;" in o["measured"] and "(M=16)" in o["measured"]


def test_render_of_a_committed_result(tmp_path):
    result = {"meta": {"device": "NVIDIA H100 80GB HBM3", "date": "d", "commit": "c"},
              "rows": rows_for(BASE, ms=(1, 16))}
    md = bench.render(json.loads(json.dumps(result)))
    assert "## Targets (issue 4; LLaMA-3-8B geomeans)" in md and "| 1 |" in md and "commit c" in md


def test_ratio_geomean_missing_shapes():
    """Summary tables average the shapes a run has; the targets (require_all) are not judged on a partial run."""
    times = {("a", "x"): 4.0, ("a", "y"): 1.0, ("b", "x"): 9.0, ("b", "y"): 1.0, ("c", "x"): 2.0}

    def t(s, m, v):
        return times.get((s, v))

    assert bench.ratio_geomean(t, ["a", "b"], 1, "x", "y") == pytest.approx(6.0)
    assert bench.ratio_geomean(t, ["a", "b", "c"], 1, "x", "y") == pytest.approx(6.0)  # c has no y: left out
    assert bench.ratio_geomean(t, ["a", "b", "c"], 1, "x", "y", require_all=True) is None
    assert bench.ratio_geomean(t, ["a", "b"], 1, "x", "y", require_all=True) == pytest.approx(6.0)


def test_compare_two_runs():
    """--compare: geomean new / old per M and variant, single rows beyond the threshold with their kernels, and a
    warning when the runs come from different devices."""
    old = {"meta": {"device": "GPU-A", "commit": "a"}, "rows": rows_for({"cublas": 10.0, "dense": 4.0})}
    new_rows = rows_for({"cublas": 10.0, "dense": 4.0})
    for r in new_rows:
        if r["variant"] == "dense" and r["shape"] == "o":
            r["time_us"], r["kernels"] = 2.0, ["k-dense-v2"]
    new = {"meta": {"device": "GPU-A", "commit": "b"}, "rows": new_rows}
    md = bench.compare(old, new)
    assert "| 1 | 1.000 | 0.841 |" in md  # cublas unchanged; dense: one of four shapes halved -> 0.5 ** 0.25
    assert "| llama3 | o | 1 | dense | 4.0 | 2.0 | 0.500 | k-dense -> k-dense-v2 |" in md
    assert "different devices" not in md
    assert "different devices" in bench.compare(old, {**new, "meta": {"device": "GPU-B"}})
    assert "none" in bench.compare(old, old)
