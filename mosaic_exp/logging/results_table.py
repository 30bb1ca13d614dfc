"""Print a table of the results of a multirun (or any folder of runs): `mosaic-results DIR`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_COLS = ("status", "quant.method", "quant.w_bits", "quant.a_bits", "quant.group_size", "residual.budget",
                "residual.block_size", "residual.selector", "bits_per_weight", "headline", "time/quantize_s")


def _get(d: dict, dotted: str):
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def collect(root: Path) -> list[dict]:
    rows = []
    for mf in sorted(root.rglob("metrics.json")):
        m = json.loads(mf.read_text())
        row = {"run": str(mf.parent.relative_to(root)) or ".", "status": m.get("status")}
        cfg = m.get("config", {})
        for c in DEFAULT_COLS:
            if c in ("status",):
                continue
            v = _get(cfg, c) if "." in c and not c.startswith("time/") else None
            if v is None:
                v = m.get("metrics", {}).get(c, m.get(c))
            row[c] = v
        row["headline_name"] = m.get("headline_name")
        rows.append(row)
    return rows


def format_table(rows: list[dict], cols=DEFAULT_COLS) -> str:
    headers = ["run", *cols]
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)
    body = [[fmt(r.get(h)) for h in headers] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("root", type=Path, nargs="?", default=None,
                    help="multirun or runs folder (default: newest under outputs/multiruns)")
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
    print(f"# results in {root} ({len(rows)} runs)")
    print(format_table(rows))


if __name__ == "__main__":
    main()
