#!/usr/bin/env bash
# One device call: build the native module, GPU tests, compute-sanitizer memcheck on a subset,
# benchmark. Logs and results go to $OUT (default ./device_out).
#   MOSAIC_COMMIT=$(git rev-parse HEAD) bash scripts/device_kernels.sh          (all stages)
#   STAGES="build test" bash scripts/device_kernels.sh                           (a subset)
#   STAGES="build test ab": then A/B prebuilt variant objects (native/exp/probe_variants.sh; VARIANTS, PROBE, TESTS,
#   FINGERPRINT=1: split-K outputs of every variant diffed bit for bit against the first); `ab` leaves the last
#   variant linked, so STAGES="build bench ab bench" benchmarks the default build and then the last variant
#   (each result file names its build: meta.native_build)
#   STAGES="build zq": ZipperQuant's tests on the GPU and its overlap / CPU-kernel benchmarks
#   STAGES="build forward": model-level speed (scripts/bench_forward.py; FWD_ARGS, default --eager)
#   STAGES="build tune bench": measure the small-M route table first (scripts/tune_gemv_routes.py ->
#   $OUT/gemv_routes.json; commit it under mosaic_exp/kernels/routes/), the benchmark then uses it
# Env: BENCH_ARGS (extra bench args), TEST_ARGS (pytest args), TEST_K (a pytest -k expression), SAN_TIMEOUT (s, default 300), BUILD_ARGS
# (e.g. --reuse-objects with native/build carried from a CPU build: only the binding is compiled here).
set -u -o pipefail
OUT=${OUT:-$PWD/device_out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
STAGES=${STAGES:-"build test sanitizer bench"}
[ -n "${MOSAIC_COMMIT:-}" ] || MOSAIC_COMMIT=$(cat .commit 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)
export MOSAIC_COMMIT
rc=0
{
  echo "commit=$MOSAIC_COMMIT date=$(date -u +%FT%TZ) stages=$STAGES"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv 2>&1
  $PY -c 'import torch;print("torch",torch.__version__,torch.version.cuda)'
} 2>&1 | tee "$OUT/env.log"
for st in $STAGES; do
  case $st in
    build)
      $PY scripts/build_native.py --ptxas-verbose ${BUILD_ARGS:-} 2>&1 | tee "$OUT/build.log" || { echo "BUILD FAILED"; exit 1; }
      cuobjdump -sass native/build/_mosaic_native*.so > /tmp/sass.txt 2>&1 || true
      { echo "SASS: HMMA: $(grep -c HMMA /tmp/sass.txt)  LDGSTS: $(grep -c LDGSTS /tmp/sass.txt)  LDS.128: $(grep -c 'LDS.128' /tmp/sass.txt)  LDL/STL: $(grep -cE 'LDL|STL' /tmp/sass.txt)"; } | tee -a "$OUT/build.log"
      # SASS of the small-M kernels (bf16, MT=1, NW=2, 6 stages: cfg4 and cfg7): dense and zipper
      awk '/Function : .*13__nv_bfloat16Li1ELi2ELi[01]ELi6ELi1E/{p=1} /Function : /&&!/13__nv_bfloat16Li1ELi2ELi[01]ELi6ELi1E/{p=0} p' /tmp/sass.txt > "$OUT/sass_small_m.txt" || true
      ;;
    test)
      timeout ${TEST_TIMEOUT:-420} $PY -m pytest tests/test_kernels.py -q --maxfail=${MAXFAIL:-15} -ra --timeout 400 ${TEST_ARGS:-} ${TEST_K:+-k "$TEST_K"} 2>&1 | tee "$OUT/test.log" | tail -25 || rc=1
      ;;
    tune)
      # small-M route table (mosaic_exp/kernels/routes.py) measured on this GPU; later stages use it
      timeout ${TUNE_TIMEOUT:-300} $PY scripts/tune_gemv_routes.py --out "$OUT/gemv_routes.json" ${TUNE_ARGS:-} 2>&1 | tee "$OUT/tune.log" | grep -v "^    " || rc=1
      [ -f "$OUT/gemv_routes.json" ] && export MOSAIC_GEMV_ROUTES="$OUT/gemv_routes.json"
      ;;
    sanitizer)
      timeout ${SAN_TIMEOUT:-300} compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 \
        $PY -m pytest tests/test_kernels.py -q -x -k "sanitizer_subset" -p no:cacheprovider 2>&1 \
        | tee "$OUT/sanitizer.log" | tail -8 || rc=1
      ;;
    ab)
      # same-call A/B of prebuilt variant objects (native/build/<variant>/*.o, carried): VARIANTS, PROBE,
      # TESTS as in native/exp/probe_variants.sh; leaves the last variant linked, so run it after test / bench
      OUT=$OUT timeout ${AB_TIMEOUT:-360} bash native/exp/probe_variants.sh 2>&1 | tee "$OUT/ab.log" || rc=1
      ;;
    zq)
      # ZipperQuant on the device: its tests (GPU dense part + CPU sparse part, overlapped), the overlap and the
      # CPU high-bits kernel benchmarks (the CPU module is built by the build stage)
      timeout ${ZQ_TIMEOUT:-300} $PY -m pytest tests/test_zipperquant.py -q -ra 2>&1 | tee "$OUT/zq_test.log" | tail -6 || rc=1
      timeout ${ZQ_TIMEOUT:-300} $PY scripts/bench_zipperquant_overlap.py --profile --out "$OUT" 2>&1 | tail -12 || rc=1
      timeout ${ZQ_TIMEOUT:-300} $PY scripts/bench_zipperquant_cpu.py --no-dense --reps 20 --out "$OUT" \
        --gpu-json "$(ls bench/results/bench_kernels_*.json | tail -1)" 2>&1 | tail -20 || rc=1
      ;;
    forward)
      # model-level speed: the harness's GPU tests, then an 8B-shaped random model's forward, bf16 vs our kernels
      timeout ${FWD_TIMEOUT:-300} $PY -m pytest tests/test_forward_speed.py tests/test_fused_linear.py -q -m gpu -ra 2>&1 | tee "$OUT/forward_test.log" | tail -4 || rc=1
      timeout ${FWD_TIMEOUT:-300} $PY scripts/bench_forward.py --out "$OUT" ${FWD_ARGS:---eager} 2>&1 | tee "$OUT/forward.log" | tail -30 || rc=1
      ;;
    bench)
      timeout ${BENCH_TIMEOUT:-480} $PY scripts/bench_kernels.py --out "$OUT" ${BENCH_ARGS:-} 2>&1 | tee -a "$OUT/bench.log" | grep -v "^  M=" || rc=1
      ;;
  esac
done
# the device tool returns at most 8 files from $OUT: past that, the logs (*.log, *.txt) go into one archive
# (results and route tables stay as files); read them with `tar xzf logs.tar.gz -C /tmp/logs`
if [ "$(find "$OUT" -maxdepth 1 -type f | wc -l)" -gt 8 ]; then
  (cd "$OUT" && tar czf logs.tar.gz --remove-files $(ls *.log *.txt 2>/dev/null)) \
    && echo "more than 8 files in \$OUT: logs packed into logs.tar.gz"
fi
echo "device_kernels.sh done rc=$rc"
exit $rc
