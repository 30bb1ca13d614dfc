# Session 24's first device call (~9 min; carry ["native/build"] with the default objects, native/build/G0 = the
# default gemv object, native/build/GZ = the MOSAIC_GEMV_ZERO_FOLD=1 gemv object, both built here):
#   1. model-level speed: the forward harness's and fused linears' GPU tests, bench_forward at 1x1 / 16x1
#      (CUDA graph and eager) on an 8B-shaped random LLaMA-3;
#   2. the offset-activation test on the default build;
#   3. NOTES v29: gemv zero fold A/B (G0 vs GZ: probe_gemv at M = 1, 2, 4, 8, dense and zipper, default plans),
#      the small-M kernel tests on GZ;
#   4. ZipperQuant's GPU tests (the CPU module built here).
set -u
export MOSAIC_COMMIT=${MOSAIC_COMMIT:-unknown} PYTHONPATH=$PWD PYTHONUNBUFFERED=1
O=$OUT
touch native/build/*.o native/build/*/*.o
python3 scripts/build_native.py --reuse-objects --no-cpu > $O/build_D.log 2>&1 || echo "BUILD FAILED"
mkdir -p $O/fw
timeout 45 python3 -m pytest tests/test_forward_speed.py tests/test_fused_linear.py -q -m gpu -ra -p no:cacheprovider > $O/fw/forward_test.log 2>&1; tail -4 $O/fw/forward_test.log
timeout 110 python3 scripts/bench_forward.py --shapes 1x1,16x1 --reps 20 --eager --out $O/fw 2>&1 | tee $O/fw/forward.log | tail -30
timeout 40 python3 -m pytest tests/test_kernels.py -q -k offset -ra -p no:cacheprovider 2>&1 | tail -3
tar czf $O/fw.tgz -C $O fw && rm -rf $O/fw
VARIANTS="G0 GZ" TEST_VARIANTS="GZ" TESTS="gemv or offset" PROBE="python3 native/exp/probe_gemv.py --ms 1,2,4,8 --plans ''" \
  OUT=$O timeout 230 bash native/exp/probe_variants.sh 2>&1 | grep -v "^\s*$" | tail -60
cp native/build/G0/*.o native/build/ && touch native/build/*.o
python3 scripts/build_native.py --reuse-objects > $O/build_cpu.log 2>&1 || echo "BUILD (with CPU module) FAILED"
timeout 60 python3 -m pytest tests/test_zipperquant.py -q -ra -p no:cacheprovider > $O/zq_test.log 2>&1; tail -6 $O/zq_test.log
tar czf $O/ab.tgz -C $O $(cd $O && ls probe_*.log build_*.log 2>/dev/null) 2>/dev/null; ls $O
