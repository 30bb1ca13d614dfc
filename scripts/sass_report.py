"""SASS of the native kernels, on a machine without a GPU (NOTES.md v16).

Compiles one kernel TU to a cubin with nvcc (sm_90a, the build's flags), disassembles it with nvdisasm
(`pip install -e '.[sass]'` brings it as the nvidia-cuda-nvdisasm wheel; $NVDISASM or PATH also work) and
reports, per kernel whose mangled name matches --match: registers and spills (ptxas), instructions, the
opcodes that matter here, and every loop (a branch back to an earlier label) with its static length. Device
time is scarce; instruction counts per k-tile are what v8 and v16 moved the small-M kernels with, and they
can be read here.

  python scripts/sass_report.py native/zipper_kernels.cu --match 'w4a16_kernelI13__nv_bfloat16Li1ELi2EL'
  python scripts/sass_report.py native/zipper_kernels.cu --match '...' --dump /tmp/sass   (one .sass per kernel)
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import build_native

# opcodes worth counting in these kernels (prefix match on the SASS opcode)
KEY_OPS = ("HMMA", "HGMMA", "LDGSTS", "LDG", "LDS", "LDSM", "STS", "BAR", "DEPBAR", "S2R", "LDC", "BRA")
_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_.]*)(.*?);")
_LABEL = re.compile(r"^(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")
_PTXAS_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


@dataclasses.dataclass
class Instr:
    addr: int
    op: str
    text: str


@dataclasses.dataclass
class KernelReport:
    name: str
    instrs: list[Instr]
    labels: dict[str, int]  # label -> address of the next instruction
    regs: int | None = None
    spill: tuple[int, int] | None = None

    def histogram(self) -> Counter:
        return Counter(k for i in self.instrs for k in KEY_OPS if i.op == k or i.op.startswith(k + "."))

    def loops(self) -> list[tuple[int, int]]:
        """(start address, static instruction count) of each backward branch's range, outermost first."""
        out = []
        for i in self.instrs:
            if not i.op.startswith("BRA"):
                continue
            m = _TARGET.search(i.text)
            if m and m.group(1) in self.labels and self.labels[m.group(1)] <= i.addr:
                start = self.labels[m.group(1)]
                out.append((start, sum(1 for j in self.instrs if start <= j.addr <= i.addr)))
        return sorted(out, key=lambda t: -t[1])


def split_functions(sass: str) -> dict[str, KernelReport]:
    """nvdisasm -c output -> one KernelReport per .text.<mangled name> section."""
    funcs: dict[str, KernelReport] = {}
    cur = None
    pending: list[str] = []
    for line in sass.splitlines():
        if line.startswith(".text."):
            cur = KernelReport(line[len(".text."):].rstrip(":"), [], {})
            funcs[cur.name] = cur
            pending = []
            continue
        if cur is None:
            continue
        m = _LABEL.match(line.strip())
        if m:
            pending.append(m.group(1))
            continue
        m = _INSTR.search(line)
        if m:
            ins = Instr(int(m.group(1), 16), m.group(2), m.group(3))
            for lab in pending:
                cur.labels[lab] = ins.addr
            pending = []
            cur.instrs.append(ins)
    return funcs


def parse_ptxas(log: str) -> dict[str, tuple[int, tuple[int, int]]]:
    """ptxas -v output -> {mangled name: (registers, (spill stores, spill loads))}."""
    out, name, spill = {}, None, (0, 0)
    for line in log.splitlines():
        if m := _PTXAS_ENTRY.search(line):
            name, spill = m.group(1), (0, 0)
        elif name and (m := _PTXAS_SPILL.search(line)):
            spill = (int(m.group(1)), int(m.group(2)))
        elif name and (m := _PTXAS_REGS.search(line)):
            out[name] = (int(m.group(1)), spill)
            name = None
    return out


def find_nvdisasm() -> str | None:
    cands = [os.environ.get("NVDISASM"), shutil.which("nvdisasm")]
    for base in sys.path:  # the nvidia-cuda-nvdisasm wheel: site-packages/nvidia/cu*/bin/nvdisasm
        cands += sorted(glob.glob(os.path.join(base, "nvidia", "*", "bin", "nvdisasm")))
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def demangle(names: list[str]) -> dict[str, str]:
    filt = shutil.which("c++filt")
    if filt is None:
        return {n: n for n in names}
    r = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True, check=False)
    outs = r.stdout.splitlines()
    return dict(zip(names, outs)) if r.returncode == 0 and len(outs) == len(names) else {n: n for n in names}


def compile_and_disassemble(tu: Path, archs: str = "90a", defines: tuple[str, ...] = ()) -> tuple[str, str]:
    """(SASS text, ptxas log) of one .cu file."""
    nvcc = build_native.find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (set NVCC or put it on PATH)")
    nvd = find_nvdisasm()
    if nvd is None:
        raise RuntimeError("nvdisasm not found: pip install -e '.[sass]' (the nvidia-cuda-nvdisasm wheel), "
                           "or set NVDISASM")
    if len(archs.split(",")) != 1:
        raise ValueError(f"one architecture per cubin, got {archs!r}")
    with tempfile.TemporaryDirectory() as td:
        cubin = Path(td) / "k.cubin"
        cmd = [nvcc, "-O3", "-std=c++17", f"-I{tu.parent}", f"-I{ROOT / 'native'}", *build_native.gencode_flags(archs),
               "-cubin", "-Xptxas=-v", *(f"-D{d}" for d in defines), str(tu), "-o", str(cubin)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"nvcc failed ({' '.join(cmd)}):\n{r.stderr[-4000:]}")
        d = subprocess.run([nvd, "-c", str(cubin)], capture_output=True, text=True, check=False)
        if d.returncode != 0:
            raise RuntimeError(f"nvdisasm failed: {d.stderr[-2000:]}")
        return d.stdout, r.stderr + r.stdout


def report(sass: str, ptxas: str, match: str) -> list[KernelReport]:
    funcs = split_functions(sass)
    regs = parse_ptxas(ptxas)
    pat = re.compile(match)
    out = []
    for name, k in funcs.items():
        if pat.search(name):
            if name in regs:
                k.regs, k.spill = regs[name]
            out.append(k)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tu", type=Path, help="a kernel .cu file (e.g. native/zipper_kernels.cu)")
    ap.add_argument("--match", default=".", help="regex on the mangled kernel name")
    ap.add_argument("--arch", default="90a")
    ap.add_argument("-D", "--define", action="append", default=[], help="extra -D for nvcc (variants)")
    ap.add_argument("--dump", type=Path, help="write each matching kernel's SASS to DIR/<n>.sass")
    a = ap.parse_args(argv)
    if not a.tu.is_file():
        ap.error(f"no such kernel file: {a.tu}")
    sass, ptxas = compile_and_disassemble(a.tu, a.arch, tuple(a.define))
    ks = report(sass, ptxas, a.match)
    if not ks:
        print(f"no kernel matches {a.match!r} in {a.tu}", file=sys.stderr)
        return 1
    names = demangle([k.name for k in ks])
    if a.dump:
        a.dump.mkdir(parents=True, exist_ok=True)
        blocks = sass.split("\n.text.")
    for n, k in enumerate(ks):
        h = k.histogram()
        loops = ", ".join(f"@{s:#x}: {c}" for s, c in k.loops()[:6]) or "none"
        spill = f"spill {k.spill[0]}/{k.spill[1]} B" if k.spill else "spill ?"
        print(f"[{n}] {names[k.name]}\n    {k.regs if k.regs is not None else '?'} registers, {spill}, "
              f"{len(k.instrs)} instructions; " + " ".join(f"{op}={c}" for op, c in sorted(h.items())) +
              f"\n    loops (start: static instructions, longest first): {loops}")
        if a.dump:
            body = next((b for b in blocks if b.startswith(k.name + ":")), "")
            (a.dump / f"{n}.sass").write_text(f"// {names[k.name]}\n.text.{body}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
