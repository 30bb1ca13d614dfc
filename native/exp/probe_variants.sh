#!/usr/bin/env bash
# Device-side A/B of compile-time variants of the gemv kernel in one call. Build each variant's object
# on the CPU host first, e.g.
#   nvcc -O3 -std=c++17 -Xcompiler -fPIC -Inative -gencode=arch=compute_90a,code=sm_90a -lineinfo \
#        -DSOME_MACRO=4 -c native/gemv_kernels.cu -o native/build/B/gemv_kernels.o
# then (carry native/build):  VARIANTS="A B" PLANS="16,16,1;8,8,1" bash native/exp/probe_variants.sh
# Each variant: its object replaces native/build/gemv_kernels.o, the module is relinked for this Python,
# native/exp/probe_gemv.py runs at M=1,2; logs go to $OUT/probe_<variant>.log.
set -u
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
for v in $VARIANTS; do
  cp native/build/$v/gemv_kernels.o native/build/gemv_kernels.o; touch native/build/*.o
  python3 scripts/build_native.py --reuse-objects > "$OUT/build_$v.log" 2>&1 || { echo "build $v failed"; tail "$OUT/build_$v.log"; continue; }
  (echo "variant $v: python3 native/exp/probe_gemv.py --ms 1,2 --plans '$PLANS'  date $(date -u +%FT%TZ)"
   python3 native/exp/probe_gemv.py --ms 1,2 --plans "$PLANS") > "$OUT/probe_$v.log" 2>&1
  grep -E "==|gemv|tiled" "$OUT/probe_$v.log" | awk -v v="$v" '{print v": "$0}'
done
