#!/usr/bin/env bash
# v8 only (commit 554c10d): uses the 'late' zipper prologue removed in v9; v9: native/exp/probe_v9b.py
# one device call: build, tests, memcheck, A/B probe, pick the small-M config / zipper prologue
# by the probe, LLaMA-3 benchmark with them; logs in one tarball (the v8 final run, native/NOTES.md)
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-$PWD/device_out}
STAGES="build test sanitizer" MAXFAIL=5 bash scripts/device_kernels.sh 2>&1 | grep -v "^ptxas\|^\[\|bytes stack" | tail -12
python3 native/exp/probe.py 2>&1 | tee $OUT/probe.log | cut -c1-400
eval "$(python3 - <<'PY'
import re, math, os
rows = [l.split() for l in open(os.environ["OUT"] + "/probe.log") if re.match(r"^(o|gate_up|down) ", l)]
def t(r, k):
    for f in r[2:]:
        if f.startswith(k + "="):
            return float(re.match(r"[^=]+=([0-9.]+)", f).group(1))
def gm(a, b):
    v = [t(r, a) / t(r, b) for r in rows]
    return math.exp(sum(map(math.log, v)) / len(v))
d, z, l = gm("dense7", "dense4"), gm("zfirst7", "zfirst4"), gm("zlate4", "zfirst4")
cfg = 7 if math.sqrt(d * z) < 0.99 else 4
zp = "late" if (l < 0.99 and cfg == 4) else "first"
print(f"echo 'probe: dense7/dense4={d:.3f} zfirst7/zfirst4={z:.3f} zlate4/zfirst4={l:.3f} -> cfg {cfg}, prologue {zp}';")
print(f"export MOSAIC_SMALL_M_CFG={cfg} MOSAIC_ZIPPER_PROLOGUE={zp}")
PY
)"
if grep -qE "[0-9]+ failed|Error|ERROR SUMMARY: [1-9]" "$OUT/test.log" "$OUT/sanitizer.log"; then
  echo "TESTS FAILED: falling back to cfg 4"; grep -E "FAILED|failed" "$OUT/test.log" | head -20
  export MOSAIC_SMALL_M_CFG=4
fi
echo "MOSAIC_SMALL_M_CFG=$MOSAIC_SMALL_M_CFG MOSAIC_ZIPPER_PROLOGUE=$MOSAIC_ZIPPER_PROLOGUE" | tee $OUT/choice.txt
STAGES="bench" BENCH_ARGS="${BENCH_ARGS:-}" bash scripts/device_kernels.sh 2>&1 | tail -45
cd "$OUT" && tar czf logs.tar.gz *.log *.txt && rm -f *.log *.txt; ls "$OUT"
