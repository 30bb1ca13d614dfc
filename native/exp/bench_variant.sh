#!/usr/bin/env bash
# One device call after an A/B (native/exp/run_v28.sh): link variant $VARIANT's carried objects as the module,
# re-tune the route table's M = 33..64 bucket for both model families with it (the split large tiles compete
# there), then run the full benchmark on that table. Each result file names its build (meta.native_build).
#   device: VARIANT=C MOSAIC_COMMIT=<hash> OUT=$OUT bash native/exp/bench_variant.sh      (carry ["native/build"])
#   VARIANT=D (the default objects) skips the swap; TUNE=0 benchmarks the committed table as is; a variant that is a
#   folder of native/build (e.g. NOTES v29's GZW) is used as it is; TUNE_ARGS replaces the tune's arguments (a
#   small-M variant: TUNE_ARGS="--shapes llama3,qwen3 --buckets 2,4 --merge mosaic_exp/kernels/routes/nvidia_h100_80gb_hbm3.json").
set -u -o pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-$PWD/device_out} PYTHONUNBUFFERED=1
mkdir -p "$OUT"
V=${VARIANT:?set VARIANT (a folder of native/build/variants.tgz, or D)}
if [ "$V" != D ]; then
  [ -d native/build/"$V" ] || tar xzf native/build/variants.tgz -C native/build "$V" \
    || { echo "variant $V: no folder native/build/$V and not in variants.tgz"; exit 2; }
  cp native/build/"$V"/*.o native/build/
fi
touch native/build/*.o
TABLE=mosaic_exp/kernels/routes/nvidia_h100_80gb_hbm3.json
STAGES="build $([ "${TUNE:-1}" = 1 ] && echo tune) bench" BUILD_ARGS=--reuse-objects \
  TUNE_ARGS="${TUNE_ARGS:---shapes llama3,qwen3 --buckets 8 --gemv-buckets= --merge $TABLE}" \
  bash scripts/device_kernels.sh 2>&1 | grep -v "^\s*$" | tail -60
