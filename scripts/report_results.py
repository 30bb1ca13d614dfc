"""Write a results file (markdown + JSON) for one suite of runs: command, device, date, commit, table.

    python scripts/report_results.py outputs/device/methods --suite methods --command "python run.py ..." \
        --commit abc123 --out bench/results/methods.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
from pathlib import Path

from mosaic_exp.logging.results_table import DEFAULT_COLS, collect, format_table


def _device() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "cpu"
    except OSError:
        return "cpu"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--note", default="", help="a line printed under the header (e.g. concurrent jobs)")
    a = ap.parse_args()
    rows = collect(a.root)
    device = _device()
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    names = sorted({r["headline_name"] for r in rows if r["headline_name"]})
    md = [f"# {a.suite}", "", f"- command: `{a.command}`", f"- device: {device}", f"- date: {date}",
          f"- commit: {a.commit}", f"- headline metric: {', '.join(names) or 'n/a'}",
          *([f"- note: {a.note}"] if a.note else []), "",
          format_table(rows, ["run", *(h for h, _ in DEFAULT_COLS)]), ""]
    md += [f"- {r['run']}: {r['error']}" for r in rows if r["error"]]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(md) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps({"suite": a.suite, "command": a.command, "device": device,
                                                      "date": date, "commit": a.commit, "note": a.note, "rows": rows}, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
