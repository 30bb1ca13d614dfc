"""The measured small-M route tables (mosaic_exp/kernels/routes.py): format checks and lookup (CPU)."""

from __future__ import annotations

import json

import pytest

from mosaic_exp.kernels import routes


def _table(**over):
    t = {"device": "GPU X", "routes": [
        {"n_pad": 4096, "k_pad": 4096, "mode": "zipper", "mb": 2, "plan": [16, 8, 2]},
        {"n_pad": 4096, "k_pad": 4096, "mode": "dense", "mb": 2, "plan": "tiled"},
        {"n_pad": 6144, "k_pad": 4096, "mode": "zipper", "mb": 4, "plan": [8, 2, 4]}]}
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
    ({"k_pad": None}, "integer n_pad"),
])
def test_bad_entries_name_the_value(bad, match):
    t = _table()
    t["routes"][0].update(bad)
    with pytest.raises(routes.RouteTableError, match=match) as e:
        routes.parse_table(t, "t.json")
    assert "routes[0]" in str(e.value)


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
