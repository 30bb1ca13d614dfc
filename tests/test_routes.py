"""The measured mid-M route tables (mosaic_exp/kernels/routes.py): format checks and lookup (CPU)."""

from __future__ import annotations

import json

import pytest

from mosaic_exp.kernels import routes


def _table(**over):
    t = {"device": "GPU X", "routes": [
        {"n_pad": 4096, "k_pad": 4096, "mode": "zipper", "mb": 2, "plan": [16, 8, 2]},
        {"n_pad": 4096, "k_pad": 4096, "mode": "dense", "mb": 2, "plan": "tiled"},
        {"n_pad": 6144, "k_pad": 4096, "mode": "zipper", "mb": 4, "plan": [8, 2, 4]},
        {"n_pad": 4096, "k_pad": 4096, "mode": "dense", "mb": 8, "plan": {"tiled": [8, 8]}},
        {"n_pad": 28672, "k_pad": 4096, "mode": "zipper", "mb": 8, "plan": {"wgmma": [64, 2, 1]}},
        {"n_pad": 6144, "k_pad": 4096, "mode": "dense", "mb": 8, "plan": "tiled"}]}
    t.update(over)
    return t


def test_lookup_by_device_shape_mode_and_block(tmp_path, monkeypatch):
    f = tmp_path / "t.json"
    f.write_text(json.dumps(_table()))
    monkeypatch.setenv("MOSAIC_GEMV_ROUTES", str(f))
    assert routes.lookup("GPU X", 4096, 4096, "zipper", 2) == (16, 8, 2)
    assert routes.lookup("GPU X", 4096, 4096, "dense", 2) == "tiled"
    assert routes.lookup("GPU X", 6144, 4096, "zipper", 4) == (8, 2, 4)
    assert routes.lookup("GPU X", 6144, 4096, "zipper", 2) is None  # no entry: the caller's default
    assert routes.lookup("GPU X", 4096, 4096, "dense", 8) == ("tiled", (8, 8))
    assert routes.lookup("GPU X", 28672, 4096, "zipper", 8) == ("wgmma", (64, 2, 1))
    assert routes.lookup("GPU Y", 4096, 4096, "zipper", 2) is None  # another GPU model
    monkeypatch.setenv("MOSAIC_GEMV_ROUTES", "off")
    assert routes.lookup("GPU X", 4096, 4096, "zipper", 2) is None


@pytest.mark.parametrize("bad,match", [
    ({"plan": [16, 3, 2]}, "warps=16 kparts=3"),
    ({"plan": [16, 8]}, r"\[warps, kparts, splitk\]"),
    ({"plan": "gemv"}, "'gemv'"),
    ({"mode": "separate"}, "'separate'"),
    ({"mb": 1}, "mb must be one of"),
    ({"n_pad": 100}, "multiples of 64, got 100"),
    ({"mb": 8}, "gemv plan needs mb in"),
    ({"plan": {"tiled": [13, 8]}}, "cfg=13 splitk=8"),
    ({"plan": {"tiled": [8, 17]}}, "cfg=8 splitk=17"),
    ({"plan": {"tiled": [8]}}, "tiled plan must be 2 integers"),
    ({"plan": {"wgmma": [48, 2, 1]}}, "bt=48 wgs=2 splitk=1"),
    ({"plan": {"wgmma": [8, 2, 1]}}, "bt=8 wgs=2 splitk=1"),  # no such tile (bt 8 is warp-specialized only)
    ({"plan": {"gemv": [16, 8, 2]}}, "plan object must be"),
    ({"k_pad": None}, "integer n_pad"),
])
def test_bad_entries_name_the_value(bad, match):
    t = _table()
    t["routes"][0].update(bad)
    with pytest.raises(routes.RouteTableError, match=match) as e:
        routes.parse_table(t, "t.json")
    assert "routes[0]" in str(e.value)


def test_row_blocks_and_mid_m_route(tmp_path, monkeypatch):
    """Row buckets of M, and what ops.mid_m_route hands the launcher for each kind of entry."""
    from types import SimpleNamespace

    from mosaic_exp.kernels import ops

    assert [routes.row_block(m) for m in (1, 8, 9, 16, 17, 32, 33, 64, 65)] == [None, None, 2, 2, 4, 4, 8, 8, None]
    f = tmp_path / "t.json"
    f.write_text(json.dumps(_table()))
    monkeypatch.setenv("MOSAIC_GEMV_ROUTES", str(f))

    def route(n, k, mode, m, dev="GPU X"):
        return ops.mid_m_route(m, SimpleNamespace(n_pad=n, k_pad=k), mode, dev)

    assert route(4096, 4096, ops.MODE_DENSE, 40) == ("tiled", (8, 8))
    assert route(4096, 4096, ops.MODE_DENSE, 64) == ("tiled", (8, 8))
    assert route(4096, 4096, ops.MODE_DENSE, 65) is None  # past the table's buckets: the M rules
    assert route(28672, 4096, ops.MODE_ZIPPER, 33) == ("wgmma", (64, 2, 1))
    assert route(6144, 4096, ops.MODE_DENSE, 50) == ("tiled", None)  # measured: the planner's own tile
    assert route(4096, 4096, ops.MODE_ZIPPER, 12) is None  # a gemv plan: gemv_default_plan's
    assert route(4096, 4096, ops.MODE_DENSE, 12) == ("tiled", None)
    assert route(4096, 4096, ops.MODE_DENSE, 40, dev="GPU Y") is None
    assert route(4096, 4096, ops.MODE_DENSE, 40, dev=None) is None


def test_bad_files(tmp_path):
    with pytest.raises(routes.RouteTableError, match="does not exist"):
        routes.load_table(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(routes.RouteTableError, match="not valid JSON"):
        routes.load_table(tmp_path / "x.json")
    with pytest.raises(routes.RouteTableError, match="'device' string"):
        routes.parse_table({"routes": []}, "t.json")


def test_committed_tables_parse():
    """Every committed table has the documented format, its provenance, and one route per key."""
    for f in routes.ROUTES_DIR.glob("*.json"):
        data = json.loads(f.read_text())
        dev, table = routes.load_table(f)
        assert dev and all(data.get(k) for k in ("date", "commit", "command")), f
        assert len(table) == len(data["routes"]), f"{f}: duplicate keys"


def test_tuner_candidates_make_valid_table_entries():
    """Every candidate the tuner times turns into a plan that the table format accepts for its bucket (the
    tuner -> table contract, checked without a GPU)."""
    import sys

    sys.path.insert(0, str(routes.ROUTES_DIR.parents[2] / "scripts"))
    import tune_gemv_routes as tune

    from mosaic_exp.kernels import ops

    entries = []
    for mb in tune.BUCKET_MS:
        assert routes.row_block(max(tune.BUCKET_MS[mb])) == mb and routes.row_block(min(tune.BUCKET_MS[mb])) == mb
        for label, kw, plan in tune.candidates(mb, sm90=True):
            if kw.get("wgmma"):
                assert kw["wgmma"][:2] in ops.WGMMA_TILES, label
            entries.append({"n_pad": 4096, "k_pad": 4096, "mode": "dense", "mb": mb, "plan": plan})
    for i, e in enumerate(entries):  # one entry per table: keys repeat across candidates
        routes.parse_table({"device": "GPU X", "routes": [e]}, f"candidate {i}")
    assert set(tune.BUCKET_MS) == set(routes.ROW_BLOCKS)
    assert not any(kw["path"] == "gemv" for _, kw, _ in tune.candidates(8, sm90=True))  # no gemv at mb 8
    assert [lbl for lbl, _, _ in tune.candidates(4, sm90=False, gemv_buckets=())] == (
        ["tiled"] + [f"tiled:{c},{sk}" for c, sk in ops.TILED_TUNE_PLANS[4]])
