#!/usr/bin/env bash
# One device call for NOTES.md v26 / v27 (the large warp-specialized tiles' split-K, v25's F producer), with the
# tree's kernel objects built here and carried:
#   here:    python scripts/build_native.py --objects-only && touch native/build/*.o
#   device:  MOSAIC_COMMIT=<hash> OUT=$OUT bash native/exp/run_v26.sh        (carry ["native/build"])
# Steps (PARTS picks a subset, in this order): build, GPU tests of the wgmma family and routing, memcheck subset,
# the split probe (default routes and forced (128, 3, s)), F's residual-free zipper against dense with the split off
# (NOTES v25's E for comparison), the M = 33..64 route tune with the (128, 3, s) candidates, the full benchmark on the
# tuned table: ~9 min in all (PARTS="build test sanitizer probe fprobe" then PARTS="build tune bench" for two calls).
# Logs and results under $OUT (device_kernels.sh packs logs when more than 8 files).
set -u -o pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-$PWD/device_out} PYTHONUNBUFFERED=1 BUILD_ARGS=${BUILD_ARGS:---reuse-objects}
mkdir -p "$OUT"
PARTS=${PARTS:-"build test sanitizer probe fprobe tune bench"}
has() { [[ " $PARTS " == *" $1 "* ]]; }
stages=""
for st in build test sanitizer; do has $st && stages="$stages $st"; done
if [ -n "$stages" ]; then
  STAGES="$stages" TEST_K=${TEST_K:-"wgmma or all_m or route or ws_big"} bash scripts/device_kernels.sh 2>&1 | grep -v "^\s*$" | tail -12
fi
if has probe; then
  timeout 200 python3 native/exp/probe_ws_big_split.py --ms 64,128,256 --splits 1,2,4,8 2>&1 | tee "$OUT/probe_ws_big_split.log"
fi
if has fprobe; then
  MOSAIC_WS_BIG_SPLITK=1 timeout 90 python3 native/exp/probe_wgmma_zipper.py --ms 128,256 2>&1 | tee "$OUT/probe_wgmma_zipper_F.log"
fi
stages=""
for st in tune bench; do has $st && stages="$stages $st"; done
if [ -n "$stages" ]; then
  STAGES="$stages" TUNE_ARGS=${TUNE_ARGS:-"--shapes llama3,qwen3 --buckets 8 --gemv-buckets= --merge mosaic_exp/kernels/routes/nvidia_h100_80gb_hbm3.json"} \
    bash scripts/device_kernels.sh 2>&1 | grep -v "^  M=\|^\s*$" | tail -40
fi
