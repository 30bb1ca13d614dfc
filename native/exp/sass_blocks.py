#!/usr/bin/env python3
"""Basic blocks of one loop of a kernel's SASS, with the opcodes that matter (the per-tile counts of NOTES v29).

    python scripts/sass_report.py native/gemv_kernels.cu -D ... --dump DIR > DIR.txt     (the loops' start / size)
    python3 native/exp/sass_blocks.py DIR/<n>.sass <loop start hex> <static instructions>

Prints one line per basic block in [start, start + 16 * size): its label, its length, the counts of HMMA / HADD2 /
HFMA2 / LDS / LDSM / LDG / LDGSTS / S2R / FFMA / FADD in it, and its last instruction (the branch that ends it).
A path through the loop (e.g. a base tile's) is the sum of the blocks it runs.
"""
from __future__ import annotations

import re
import sys

KEYS = ("HMMA", "HFMA2", "HADD2", "LDS", "LDSM", "LDG", "LDGSTS", "S2R", "FFMA", "FADD")


def blocks(text: str, start: int, end: int) -> list[tuple[str | None, list[str]]]:
    out: list = []
    cur: list[str] = []
    label = None
    for line in text.splitlines():
        lm = re.match(r"\.(L_x_\d+):", line.strip())
        if lm:
            if cur:
                out.append((label, cur))
            cur, label = [], lm.group(1)
            continue
        m = re.match(r"\s*/\*([0-9a-f]+)\*/\s+(.*?);", line)
        if not m or not start <= int(m.group(1), 16) < end:
            continue
        cur.append(m.group(2).strip())
        if "BRA" in m.group(2) or "EXIT" in m.group(2):
            out.append((label, cur))
            cur, label = [], None
    if cur:
        out.append((label, cur))
    return out


def main() -> int:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    path, start, size = sys.argv[1], int(sys.argv[2], 16), int(sys.argv[3])
    with open(path) as f:
        text = f.read()
    for label, ins in blocks(text, start, start + 16 * size):
        ops: dict[str, int] = {}
        for x in ins:
            op = re.sub(r"^@!?U?P\w+\s+", "", x).split()[0].split(".")[0]
            ops[op] = ops.get(op, 0) + 1
        key = " ".join(f"{k}{v}" for k, v in sorted(ops.items()) if k in KEYS)
        print(f"{label or '':10s} {len(ins):4d}  {key}  | last: {ins[-1][:50]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
