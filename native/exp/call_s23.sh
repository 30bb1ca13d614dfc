# Session 23's one device call (the budget left one short call, ~4 min): model-level speed (GPU tests of the
# harness and the fused linears, bench_forward at decode shapes), ZipperQuant's GPU tests. NOTES v28 and the
# overlap benchmark dropped (device budget). Carry the three kernel objects.
set -u
export MOSAIC_COMMIT=${MOSAIC_COMMIT:-unknown} PYTHONPATH=$PWD PYTHONUNBUFFERED=1
O=$OUT
touch native/build/*.o
python3 scripts/build_native.py --reuse-objects --no-cpu > $O/build_D.log 2>&1 || echo "BUILD FAILED"
mkdir -p $O/fw
timeout 45 python3 -m pytest tests/test_forward_speed.py tests/test_fused_linear.py -q -m gpu -ra -p no:cacheprovider > $O/fw/forward_test.log 2>&1; tail -4 $O/fw/forward_test.log
timeout 100 python3 scripts/bench_forward.py --shapes 1x1,16x1 --reps 20 --eager --out $O/fw 2>&1 | tee $O/fw/forward.log | tail -30
tar czf $O/fw.tgz -C $O fw && rm -rf $O/fw
python3 scripts/build_native.py --cpu-only > $O/cpu_build.log 2>&1 || echo "CPU BUILD FAILED"
timeout 60 python3 -m pytest tests/test_zipperquant.py -q -ra -p no:cacheprovider > $O/zq_test.log 2>&1; tail -6 $O/zq_test.log
ls -la $O
