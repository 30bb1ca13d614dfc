#!/usr/bin/env bash
# Device-side A/B of compile-time variants of one kernel TU in one call. Build each variant's object on the
# CPU host first, e.g.
#   nvcc -O3 -std=c++17 -Xcompiler -fPIC -Inative -gencode=arch=compute_90a,code=sm_90a \
#        -DSOME_MACRO=1 -c native/zipper_kernels.cu -o native/build/B/zipper_kernels.o
# then (carry native/build):
#   VARIANTS="A B" OBJ=zipper_kernels PROBE="python3 native/exp/probe_mid_m.py --ms 16,32,64" bash native/exp/probe_variants.sh
#   VARIANTS="A B" PLANS="16,16,1;8,8,1" bash native/exp/probe_variants.sh      (default: the gemv TU, probe_gemv.py at M=1,2)
# Each variant: its object replaces native/build/$OBJ.o, the module is relinked for this Python, then
# $PROBE runs (and, with TESTS set, `pytest tests/test_kernels.py -k "$TESTS"`); logs go to $OUT/probe_<variant>.log.
set -u
OUT=${OUT:-$PWD/device_out}
OBJ=${OBJ:-gemv_kernels}
PROBE=${PROBE:-python3 native/exp/probe_gemv.py --ms 1,2 --plans "${PLANS:-16,16,1}"}
mkdir -p "$OUT"
for v in $VARIANTS; do
  cp "native/build/$v/$OBJ.o" "native/build/$OBJ.o"; touch native/build/*.o
  python3 scripts/build_native.py --reuse-objects > "$OUT/build_$v.log" 2>&1 || { echo "build $v failed"; tail "$OUT/build_$v.log"; continue; }
  (echo "variant $v ($OBJ.o): $PROBE  commit ${MOSAIC_COMMIT:-?}  date $(date -u +%FT%TZ)"
   eval "$PROBE"
   if [ -n "${TESTS:-}" ]; then python3 -m pytest tests/test_kernels.py -q -k "$TESTS" 2>&1 | tail -5; fi) > "$OUT/probe_$v.log" 2>&1
  grep -E "==|gemv|tiled|wgmma|dense|zipper|passed|failed" "$OUT/probe_$v.log" | head -80 | awk -v v="$v" '{print v": "$0}'
done
