#!/usr/bin/env python3
"""Same-call A/B of compile-time variants as one markdown table (the logs of native/exp/probe_variants.sh).

    python3 native/exp/ab_table.py OUT/probe_G0.log OUT/probe_GZW.log OUT/probe_GZWX.log > bench/results/ab_....md

Each log holds probe_common.run's lines ("== <shape> K=.. N=.. M=..: cublas .. us" then "  <mode> <run> <t> us ..
<kernel>"). The first log is the baseline: every other variant's time is shown with its ratio to it (< 1: faster),
and a geomean of those ratios per (mode, M) over the shapes closes the table. Rows a variant lacks (a failed or
cut-off run) are left empty, not dropped.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

HEAD = re.compile(r"^== (?P<shape>\S+) K=(?P<k>\d+) N=(?P<n>\d+) M=(?P<m>\d+): cublas (?P<cublas>[\d.]+) us")
ROW = re.compile(r"^  (?P<mode>\S+)\s+(?P<run>.+?)\s+(?P<us>[\d.]+) us\s+\S+x\s+\S+ TFLOP/s\s+(?P<kernel>\S+)\s*$")


def parse(text: str) -> tuple[str, dict]:
    """(first line, {(shape, n, k, m, mode, run): (us, kernel)}) of one probe log."""
    lines = text.splitlines()
    rows: dict = {}
    cur = None
    for line in lines:
        h = HEAD.match(line)
        if h:
            cur = (h["shape"], int(h["n"]), int(h["k"]), int(h["m"]))
            continue
        r = ROW.match(line)
        if r and cur is not None:
            rows[(*cur, r["mode"], r["run"].strip())] = (float(r["us"]), r["kernel"])
    return (lines[0] if lines else ""), rows


def table(logs: list[tuple[str, str]]) -> str:
    """Markdown for [(variant name, log text)], the first the baseline."""
    parsed = [(name, *parse(text)) for name, text in logs]
    base_name, _, base = parsed[0]
    keys = list(base) + [k for _, _, rows in parsed[1:] for k in rows if k not in base]
    out = [f"# A/B: {' vs '.join(n for n, _, _ in parsed)} (baseline {base_name})", ""]
    out += [f"- {n}: `{first}`" for n, first, _ in parsed] + [""]
    cols = " | ".join(f"{n} us" + ("" if i == 0 else f" (vs {base_name})") for i, (n, _, _) in enumerate(parsed))
    out += [f"| shape | M | mode | run | {cols} | kernel ({parsed[-1][0]}) |",
            "|---|---|---|---|" + "---|" * len(parsed) + "---|"]
    ratios: dict = {}
    for key in keys:
        shape, n, k, m, mode, run = key
        cells = []
        for i, (name, _, rows) in enumerate(parsed):
            if key not in rows:
                cells.append("")
                continue
            us = rows[key][0]
            if i == 0 or key not in base:
                cells.append(f"{us:.1f}")
                continue
            r = us / base[key][0]
            ratios.setdefault((mode, run, m, name), []).append(r)
            cells.append(f"{us:.1f} ({r:.3f})")
        kernel = next((rows[key][1] for _, _, rows in reversed(parsed) if key in rows), "")
        out.append(f"| {shape} {k}->{n} | {m} | {mode} | {run} | " + " | ".join(cells) + f" | {kernel} |")
    if ratios:
        out += ["", f"Geomean time ratio vs {base_name} over the shapes (< 1: faster)", "",
                "| mode | run | M | " + " | ".join(n for n, _, _ in parsed[1:]) + " |",
                "|---|---|---|" + "---|" * (len(parsed) - 1)]
        for mode, run, m in sorted({(a, b, c) for a, b, c, _ in ratios}):
            cells = []
            for name, _, _ in parsed[1:]:
                rs = ratios.get((mode, run, m, name))
                cells.append(f"{math.exp(sum(map(math.log, rs)) / len(rs)):.3f} ({len(rs)})" if rs else "")
            out.append(f"| {mode} | {run} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", help="probe_<variant>.log files, the baseline first")
    a = ap.parse_args()
    logs = []
    for f in a.logs:
        p = Path(f)
        name = p.stem.removeprefix("probe_")
        logs.append((name, p.read_text()))
    sys.stdout.write(table(logs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
