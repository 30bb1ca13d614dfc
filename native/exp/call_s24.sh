# Session 24's first device call (~9 min; carry ["native/build"] with the default objects, native/build/G0 = the
# default gemv object, GZW = zero fold 1 (dense) + the zipper's loop-carried weight pointer, GZWX = GZW + the
# constant X step, all built here:
#   python scripts/build_native.py --objects-only && mkdir -p native/build/G0 && cp native/build/gemv_kernels.o native/build/G0/
#   python scripts/build_native.py --out native/build/GZW --objects-only --tus gemv_kernels \
#     -D MOSAIC_GEMV_ZERO_FOLD=1 -D MOSAIC_GEMV_ZIPPER_WPTR=1
#   python scripts/build_native.py --out native/build/GZWX --objects-only --tus gemv_kernels \
#     -D MOSAIC_GEMV_ZERO_FOLD=1 -D MOSAIC_GEMV_ZIPPER_WPTR=1 -D MOSAIC_GEMV_XSTEP_CONST=1):
#   1. model-level speed: the forward harness's and fused linears' GPU tests, bench_forward at 1x1 / 16x1
#      (CUDA graph and eager) on an 8B-shaped random LLaMA-3;
#   2. the offset-activation test on the default build;
#   3. NOTES v29 A/B (G0 vs GZW vs GZWX: probe_gemv's default routing at M = 1, 2, 4, 8, dense and zipper; GZW's
#      dense rows measure the fold, its zipper rows the pointer; GZWX vs GZW the constant X step), the small-M
#      kernel tests on GZWX (all three switches on).
# ZipperQuant's GPU tests and overlap benchmark: the second call (STAGES="build zq" bash scripts/device_kernels.sh).
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
VARIANTS="G0 GZW GZWX" TEST_VARIANTS="GZWX" TESTS="gemv or offset" PROBE="python3 native/exp/probe_gemv.py --ms 1,2,4,8 --plans '' --runs default" \
  OUT=$O timeout 320 bash native/exp/probe_variants.sh 2>&1 | grep -v "^\s*$" | tail -90
python3 native/exp/ab_table.py $O/probe_G0.log $O/probe_GZW.log $O/probe_GZWX.log > $O/ab_v29.md 2>&1; tail -14 $O/ab_v29.md
tar czf $O/ab.tgz -C $O $(cd $O && ls probe_*.log build_*.log 2>/dev/null) 2>/dev/null; ls $O
