"""scripts/tune_gemv_routes.py without a GPU: a merged table's route competes with the run's candidates.

Regression (session 15): tuning mb 2 with --gemv-buckets= and --merge replaced the table's measured gemv
routes with 'tiled' because no gemv plan was timed; the incumbent route must be among the timed plans."""

from __future__ import annotations

import json

from tests.conftest import ROOT, load_script

tune = load_script("tune_gemv_routes")

H100_TABLE = ROOT / "mosaic_exp" / "kernels" / "routes" / "nvidia_h100_80gb_hbm3.json"


def test_incumbent_gemv_route_is_timed_when_gemv_is_not_searched():
    runs = tune.candidates(2, sm90=True, gemv_buckets=())
    assert not any(kw["path"] == "gemv" for _, kw, _ in runs)
    with_old = tune.with_incumbent(runs, [16, 8, 1])
    assert len(with_old) == len(runs) + 1
    label, kw, plan = with_old[-1]
    assert label.startswith("table:") and plan == [16, 8, 1]
    assert kw == {"path": "gemv", "gemv": (16, 8, 1)}


def test_incumbent_already_among_candidates_is_not_timed_twice():
    runs = tune.candidates(8, sm90=True, gemv_buckets=())
    assert tune.with_incumbent(runs, {"wgmma": [64, 3, 1]}) == runs
    assert tune.with_incumbent(runs, "tiled") == runs
    assert tune.with_incumbent(runs, None) == runs


def test_plan_kwargs_of_every_route_form():
    assert tune.plan_kwargs("tiled") == {"path": "tiled"}
    assert tune.plan_kwargs({"tiled": [6, 8]}) == {"path": "tiled", "cfg": 6, "splitk": 8}
    assert tune.plan_kwargs({"wgmma": [64, 2, 4]}) == {"path": "wgmma", "wgmma": (64, 2, 4)}
    assert tune.plan_kwargs([16, 4, 2]) == {"path": "gemv", "gemv": (16, 4, 2)}


def test_every_committed_route_becomes_a_candidate_of_its_bucket():
    """Each route of the committed H100 table, offered as the incumbent to a run that searches nothing but the
    tiled baseline's bucket, is timed with the keywords that reproduce it."""
    for r in json.loads(H100_TABLE.read_text())["routes"]:
        runs = tune.with_incumbent(tune.candidates(r["mb"], sm90=True, gemv_buckets=()), r["plan"])
        hits = [kw for _, kw, p in runs if p == r["plan"]]
        assert hits == [tune.plan_kwargs(r["plan"])], r


def test_zipper_only_configs_are_not_timed_for_dense():
    """cfg 10 / 11 / 12 (NOTES.md v20 / v21) differ from cfg 2 / 4 / 5 only in the zipper kernel: dense runs leave
    them out."""
    for mb in (2, 4, 8):
        cfgs = {v: {kw.get("cfg") for _, kw, _ in tune.candidates(mb, sm90=True, gemv_buckets=(), variant=v)}
                for v in ("dense", "zipper")}
        assert cfgs["zipper"] & set(tune.ops.ZIPPER_ONLY_TUNE_CFGS), mb
        assert not cfgs["dense"] & set(tune.ops.ZIPPER_ONLY_TUNE_CFGS), mb


def test_pick_route_keeps_the_incumbent_within_the_margin():
    us = {"tiled": [55.7, 57.9], "wgmma:64,3,1": [56.1, 55.4], "tiled:6,2": [56.5, 59.5]}
    plans = {lbl: tune.plan_of_label(lbl) for lbl in us}
    assert tune.pick_route(us, plans, {"wgmma": [64, 3, 1]}, 0.03) == {"wgmma": [64, 3, 1]}  # a 2 % tie: kept
    assert tune.pick_route(us, plans, None, 0.03) == "tiled"  # no incumbent: the baseline, as before
    assert tune.pick_route(us, plans, {"tiled": [9, 9]}, 0.03) == "tiled"  # an incumbent that did not run
    us["tiled:6,2"] = [40.0, 40.0]  # > 3 % faster than the incumbent: it wins
    assert tune.pick_route(us, plans, {"wgmma": [64, 3, 1]}, 0.03) == {"tiled": [6, 2]}


def test_plan_of_label_inverts_the_candidate_labels():
    for mb in (2, 4, 8):
        for label, _, plan in tune.with_incumbent(tune.candidates(mb, sm90=True), {"tiled": [99, 1]}):
            assert tune.plan_of_label(label) == plan, label


def test_repick_rewrites_only_the_chosen_buckets_and_modes():
    timing = {"ms": [48, 64], "us": {"tiled": [10.0, 10.0], "wgmma:64,3,1": [9.9, 9.9]}}
    new = {"routes": [{"n_pad": 256, "k_pad": 128, "mode": "zipper", "mb": 8, "plan": "tiled"},
                      {"n_pad": 256, "k_pad": 128, "mode": "dense", "mb": 8, "plan": "tiled"}],
           "timings": {"256x128:zipper:mb8": timing, "256x128:dense:mb8": timing}}
    old = {"routes": [{**r, "plan": {"wgmma": [64, 3, 1]}} for r in new["routes"]]}
    out = tune.repick(new, old, buckets=[8], modes=["zipper"], margin=0.03)
    assert [r["plan"] for r in out["routes"]] == [{"wgmma": [64, 3, 1]}, "tiled"]
    assert out["repicked"]["changed"] == [{"n_pad": 256, "k_pad": 128, "mode": "zipper", "mb": 8, "from": "tiled",
                                           "to": {"wgmma": [64, 3, 1]}}]
