#!/usr/bin/env bash
# One device call for NOTES.md v28 (the split large tiles: their fix-up's cost, a cluster fix-up, balanced split
# ranges for the zipper) and v25's two-lane producer, with five builds of wgmma_kernels.o made here and carried
# (carry ["native/build"]; the variants go compressed, four objects would pass the 64 MiB carry limit):
#   here:   python scripts/build_native.py --objects-only                      (the default: global, last arriver)
#           for v in "C MOSAIC_WS_BIG_SPLIT_FIXUP=1" "P MOSAIC_WS_BIG_SPLIT_FIXUP=9" "B MOSAIC_WS_BIG_BALANCED=1" \
#                    "S MOSAIC_WS_BIG_SPLIT_PRODUCER=1"; do
#             set -- $v; python scripts/build_native.py --out native/build/$1 --objects-only --tus wgmma_kernels -D $2; done
#           touch native/build/*.o native/build/*/*.o
#           (cd native/build && tar czf variants.tgz C P B S && rm -rf C P B S)
#   device: MOSAIC_COMMIT=<hash> OUT=$OUT bash native/exp/run_v28.sh
# Variants (D = default, made on the device from the carried objects; C = cluster / DSMEM fix-up; S = v25's two
# producer lanes; B = balanced zipper split ranges; P = no fix-up, a probe with wrong outputs: what the fix-up
# costs), in order of importance (a machine can be taken back mid-call): per variant the output fingerprints of
# the split launches (diffed against D: C and S must be bit-identical, B and P differ by design), the split probe
# (o, qkv, down at M = 64 / 128 / 256, splits 1 / 2 / 4 / 8, dense and zipper @3 %) and the kernel's own duration
# under ncu at o M = 128 for s = 1 and 4; GPU tests of the wgmma family on C (TEST_VARIANTS); then C relinked, the
# full benchmark on it (BENCH=1, the committed route table) and memcheck on it. ~9 min: AB_TIMEOUT cuts the A/B
# (the later variants are lost, not the rest). Read: P vs D = the global fix-up's cost; C vs D; S vs D; B vs D on
# the zipper rows (z3) only.
set -u -o pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-$PWD/device_out} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
[ -f native/build/variants.tgz ] && tar xzf native/build/variants.tgz -C native/build
touch native/build/*.o  # the carried objects stand (no kernel TU recompiled here)
# D = the default objects, copied here
mkdir -p native/build/D && cp native/build/wgmma_kernels.o native/build/D/
NCU='for s in 1 4; do SPLITK=$s M=128 K=4096 N=4096 BT=128 WGS=3 timeout 60 ncu --metrics gpu__time_duration.sum -k regex:ws_big python3 native/exp/ncu_wgmma.py 2>&1 | grep -E "wgmma-|duration"; done'
STAGES="build ab" BUILD_ARGS="--reuse-objects --no-cpu" VARIANTS=${VARIANTS:-"D C B S P"} TEST_VARIANTS=${TEST_VARIANTS:-"C"} \
  TESTS="wgmma or all_m or ws_big" AB_TIMEOUT=${AB_TIMEOUT:-270} FINGERPRINT=1 \
  PROBE="python3 native/exp/probe_ws_big_split.py --ms 64,128,256 --splits 1,2,4,8 --shapes o,qkv,down; $NCU" \
  bash scripts/device_kernels.sh 2>&1 | grep -v "^\s*$" | tail -100
[ -f "$OUT/logs.tar.gz" ] && mv "$OUT/logs.tar.gz" "$OUT/logs_ab.tar.gz"  # the second pass packs its own
# the cluster fix-up (the new synchronization) linked: the full benchmark on it, then memcheck
cp native/build/C/*.o native/build/ && touch native/build/*.o
python3 scripts/build_native.py --reuse-objects --no-cpu > "$OUT/build_C.log" 2>&1 || echo "relink C failed"
# (the benchmark by default only on the H100: the targets and the route table are the H100's)
H100=$(nvidia-smi --query-gpu=name --format=csv,noheader | grep -c H100)
STAGES="$([ "${BENCH:-$H100}" = 1 ] && echo bench) sanitizer" SAN_TIMEOUT=${SAN_TIMEOUT:-90} BENCH_TIMEOUT=${BENCH_TIMEOUT:-200} \
  bash scripts/device_kernels.sh 2>&1 | grep -v "^\s*$" | tail -40
