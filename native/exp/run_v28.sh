#!/usr/bin/env bash
# One device call for NOTES.md v28 (the split large tiles: their fix-up's cost, a cluster fix-up, balanced split
# ranges for the zipper), with four builds of wgmma_kernels.o made here and carried (carry ["native/build"]):
#   here:   python scripts/build_native.py --objects-only                      (the default: global, last arriver)
#           for v in "C MOSAIC_WS_BIG_SPLIT_FIXUP=1" "P MOSAIC_WS_BIG_SPLIT_FIXUP=9" "B MOSAIC_WS_BIG_BALANCED=1"; do
#             set -- $v; python scripts/build_native.py --out native/build/$1 --objects-only --tus wgmma_kernels -D $2; done
#           touch native/build/*.o native/build/*/*.o
#   device: MOSAIC_COMMIT=<hash> OUT=$OUT bash native/exp/run_v28.sh
# Per variant (P = no fix-up, a probe with wrong outputs: what the fix-up costs; B = balanced zipper split ranges;
# D = default; C = cluster / DSMEM fix-up, left linked): the split probe (o, qkv, down at M = 64 / 128 / 256, splits
# 1 / 2 / 4 / 8, dense and zipper @3 %) and the kernel's own duration under ncu at o M = 128 for s = 1 and 4 (graph
# time per call minus this = launch gaps); GPU tests of the wgmma family on D, B and C; then memcheck on C. ~6 min.
# Read: P vs D = the global fix-up's cost; C vs D; B vs D on the zipper rows (z3) only.
set -u -o pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-$PWD/device_out} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
# D = the default objects, copied here (not carried: the carry limit is 64 MiB with the tree)
mkdir -p native/build/D && cp native/build/wgmma_kernels.o native/build/D/
NCU='for s in 1 4; do SPLITK=$s M=128 K=4096 N=4096 BT=128 WGS=3 timeout 60 ncu --metrics gpu__time_duration.sum -k regex:ws_big python3 native/exp/ncu_wgmma.py 2>&1 | grep -E "wgmma-|duration"; done'
STAGES="build ab sanitizer" BUILD_ARGS=--reuse-objects VARIANTS=${VARIANTS:-"P B D C"} TEST_VARIANTS=${TEST_VARIANTS:-"D B C"} \
  TESTS="wgmma or all_m or ws_big" AB_TIMEOUT=${AB_TIMEOUT:-400} SAN_TIMEOUT=${SAN_TIMEOUT:-120} \
  PROBE="python3 native/exp/probe_ws_big_split.py --ms 64,128,256 --splits 1,2,4,8 --shapes o,qkv,down; $NCU" \
  bash scripts/device_kernels.sh 2>&1 | grep -v "^\s*$" | tail -90
