#!/usr/bin/env bash
# One device call for NOTES.md v28 (the split large tiles' fix-up), with the three builds of wgmma_kernels.o made
# here and carried (carry ["native/build"]):
#   here:   python scripts/build_native.py --objects-only                      (the default: global, last arriver)
#           mkdir -p native/build/D && cp native/build/wgmma_kernels.o native/build/D/
#           python scripts/build_native.py --out native/build/C --objects-only --tus wgmma_kernels -D MOSAIC_WS_BIG_SPLIT_FIXUP=1
#           python scripts/build_native.py --out native/build/P --objects-only --tus wgmma_kernels -D MOSAIC_WS_BIG_SPLIT_FIXUP=9
#           touch native/build/*.o native/build/*/*.o
#   device: MOSAIC_COMMIT=<hash> OUT=$OUT bash native/exp/run_v28.sh
# Per variant (P = no fix-up, a probe with wrong outputs: what the fix-up costs; D = default; C = cluster / DSMEM,
# left linked): the split probe (o, qkv, down at M = 64 / 128 / 256, splits 1 / 2 / 4 / 8) and the kernel's own
# duration under ncu at o M = 128 for s = 1 / 2 / 4 (graph time per call minus this = launch gaps); GPU tests of
# the wgmma family on C (and D); then memcheck on C. ~5 min. Read: P vs D = the global fix-up's cost; C vs D.
set -u -o pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-$PWD/device_out} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
NCU='for s in 1 2 4; do SPLITK=$s M=128 K=4096 N=4096 BT=128 WGS=3 timeout 60 ncu --metrics gpu__time_duration.sum -k regex:ws_big python3 native/exp/ncu_wgmma.py 2>&1 | grep -E "wgmma-|duration"; done'
STAGES="build ab sanitizer" BUILD_ARGS=--reuse-objects VARIANTS=${VARIANTS:-"P D C"} TEST_VARIANTS="D C" \
  TESTS="wgmma or all_m or ws_big" AB_TIMEOUT=${AB_TIMEOUT:-330} SAN_TIMEOUT=${SAN_TIMEOUT:-120} \
  PROBE="python3 native/exp/probe_ws_big_split.py --ms 64,128,256 --splits 1,2,4,8 --shapes o,qkv,down; $NCU" \
  bash scripts/device_kernels.sh 2>&1 | grep -v "^\s*$" | tail -90
