"""Tables of run results from their metrics.json files: `mosaic-results DIR` (or python -m ...)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# (header, where): "cfg:a.b" reads the resolved config, "m:key" the metrics, "top:key" metrics.json itself.
DEFAULT_COLS: tuple[tuple[str, str], ...] = (
    ("status", "top:status"),
    ("method", "cfg:quant.method"),
    ("base", "cfg:quant.base"),
    ("W", "cfg:quant.w_bits"),
    ("A", "cfg:quant.a_bits"),
    ("group", "cfg:quant.group_size"),
    ("alpha", "cfg:quant.smooth_alpha"),
    ("budget", "cfg:residual.budget"),
    ("block", "cfg:residual.block_size"),
    ("selector", "cfg:residual.selector"),
    ("scope", "cfg:residual.scope"),
    ("bits/w", "m:bits_per_weight"),
    ("kept", "m:residual/kept_fraction"),
    ("headline", "top:headline"),
    ("windows", "m:eval/wikitext2_windows"),
    ("calib+quant s", "m:time/calib_quant_s"),
    ("peak GPU GB", "m:mem/quantize_gpu_peak_gb"),
)


def _get(d, dotted: str):
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _value(record: dict, where: str):
    kind, key = where.split(":", 1)
    if kind == "cfg":
        v = _get(record.get("config", {}), key)
        return v
    if kind == "m":
        m = record.get("metrics", {})
        if key == "time/calib_quant_s":
            parts = [m.get("time/calibrate_s"), m.get("time/quantize_s")]
            return sum(p for p in parts if p is not None) if any(p is not None for p in parts) else None
        return m.get(key)
    return record.get(key)


def collect(root: Path, cols=DEFAULT_COLS) -> list[dict]:
    """One row per metrics.json under root (sorted by path), plus 'run' and 'headline_name'."""
    rows = []
    for mf in sorted(Path(root).rglob("metrics.json")):
        rec = json.loads(mf.read_text())
        row = {"run": str(mf.parent.relative_to(root)) or ".", "headline_name": rec.get("headline_name"),
               "error": rec.get("error") or rec.get("metrics", {}).get("error")}
        row.update({h: _value(rec, w) for h, w in cols})
        rows.append(row)
    return rows


def format_table(rows: list[dict], headers: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    body = [[fmt(r.get(h)) for h in headers] for r in rows]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", type=Path, nargs="?", default=None,
                    help="multirun or runs folder (default: the newest under outputs/multiruns)")
    args = ap.parse_args(argv)
    root = args.root
    if root is None:
        cands = sorted(Path("outputs/multiruns").glob("*"))
        if not cands:
            raise SystemExit("no multirun under outputs/multiruns; pass a folder")
        root = cands[-1]
    rows = collect(root)
    if not rows:
        raise SystemExit(f"no metrics.json under {root}")
    names = {r["headline_name"] for r in rows if r["headline_name"]}
    print(f"# {len(rows)} runs in {root}; headline = {', '.join(sorted(names)) or 'n/a'}")
    print(format_table(rows, ["run", *(h for h, _ in DEFAULT_COLS)]))
    for r in rows:
        if r["error"]:
            print(f"- {r['run']}: {r['error']}")


if __name__ == "__main__":
    main()
