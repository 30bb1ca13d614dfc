#!/usr/bin/env bash
# Device-side A/B of compile-time variants of the kernel TUs in one call. Build each variant's objects on the
# CPU host first (every object in native/build/<variant>/ replaces its namesake in native/build/), e.g.
#   python scripts/build_native.py --out native/build/B --objects-only --tus zipper_kernels -D SOME_MACRO=1
# then (carry native/build):
#   VARIANTS="A B" PROBE="python3 native/exp/probe_mid_m.py --ms 16,32,64" bash native/exp/probe_variants.sh
#   VARIANTS="A B" PLANS="16,16,1;8,8,1" bash native/exp/probe_variants.sh      (default probe: probe_gemv.py at M=1,2)
# Each variant: its objects replace those in native/build/, the module is relinked for this Python, then
# $PROBE runs (and, with TESTS set, `pytest tests/test_kernels.py -k "$TESTS"` for the variants in TEST_VARIANTS,
# default all); logs go to $OUT/probe_<variant>.log. FINGERPRINT=1: each variant first writes the SHA-256 of ~360
# split-K launches (native/exp/fixup_outputs.py -> $OUT/fixup_<variant>.txt), and every later variant is diffed
# against the first ('#' header lines aside): "bit-identical" or the differing launches ($OUT/fixup_diff_<v>.txt).
set -u
OUT=${OUT:-$PWD/device_out}
PROBE=${PROBE:-python3 native/exp/probe_gemv.py --ms 1,2 --plans "${PLANS:-16,16,1}"}
mkdir -p "$OUT"
for v in $VARIANTS; do
  objs=$(cd "native/build/$v" && ls *.o | tr '\n' ' ')
  cp native/build/$v/*.o native/build/ || { echo "variant $v: no objects in native/build/$v"; continue; }
  touch native/build/*.o
  python3 scripts/build_native.py --reuse-objects > "$OUT/build_$v.log" 2>&1 || { echo "build $v failed"; tail "$OUT/build_$v.log"; continue; }
  (echo "variant $v ($objs): $PROBE  commit ${MOSAIC_COMMIT:-?}  date $(date -u +%FT%TZ)"
   if [ -n "${FINGERPRINT:-}" ]; then python3 native/exp/fixup_outputs.py > "$OUT/fixup_$v.txt" 2> "$OUT/fixup_$v.err"; fi
   eval "$PROBE"
   if [ -n "${TESTS:-}" ] && [[ " ${TEST_VARIANTS:-$VARIANTS} " == *" $v "* ]]; then python3 -m pytest tests/test_kernels.py -q -k "$TESTS" 2>&1 | tail -5; fi) > "$OUT/probe_$v.log" 2>&1
  grep -E "==|gemv|tiled|wgmma|dense|zipper|passed|failed" "$OUT/probe_$v.log" | head -80 | awk -v v="$v" '{print v": "$0}'
done
if [ -n "${FINGERPRINT:-}" ]; then
  first=${VARIANTS%% *}
  for v in $VARIANTS; do
    [ "$v" = "$first" ] && continue
    n=$(grep -cE ': [0-9a-f]{16}$' "$OUT/fixup_$v.txt" 2>/dev/null); n0=$(grep -cE ': [0-9a-f]{16}$' "$OUT/fixup_$first.txt" 2>/dev/null)
    if [ "${n:-0}" = 0 ] || [ "${n0:-0}" = 0 ]; then
      echo "fingerprints $v vs $first: none to compare ($first: ${n0:-0}, $v: ${n:-0} launches; see $OUT/fixup_*.err)"
    elif diff <(grep -v '^#' "$OUT/fixup_$first.txt") <(grep -v '^#' "$OUT/fixup_$v.txt") > "$OUT/fixup_diff_$v.txt"; then
      echo "fingerprints $v vs $first: bit-identical ($n launches)"
    else
      echo "fingerprints $v vs $first: DIFFER in $(grep -c '^>' "$OUT/fixup_diff_$v.txt") launches ($OUT/fixup_diff_$v.txt)"
    fi
  done
fi
