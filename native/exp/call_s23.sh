# Session 23's one device call (the budget left one short call): ZipperQuant's GPU tests + overlap bench, then
# model-level speed (its GPU tests + bench_forward). NOTES v28 dropped (device budget). Carry the three objects.
set -u
export MOSAIC_COMMIT=${MOSAIC_COMMIT:-unknown} PYTHONPATH=$PWD PYTHONUNBUFFERED=1
O=$OUT
touch native/build/*.o
python3 scripts/build_native.py --reuse-objects --no-cpu > $O/build_D.log 2>&1 || echo "BUILD FAILED"
python3 scripts/build_native.py --cpu-only > $O/cpu_build.log 2>&1 || echo "CPU BUILD FAILED"
mkdir -p $O/zq
timeout 70 python3 -m pytest tests/test_zipperquant.py -q -ra -p no:cacheprovider > $O/zq/zq_test.log 2>&1; tail -6 $O/zq/zq_test.log
timeout 45 python3 scripts/bench_zipperquant_overlap.py --profile --shapes o,down --ms 1,16 --densities 0.01 --reps 30 --out $O/zq 2>&1 | tail -10
tar czf $O/zq.tgz -C $O zq && rm -rf $O/zq
mkdir -p $O/fw
timeout 60 python3 -m pytest tests/test_forward_speed.py tests/test_fused_linear.py -q -m gpu -ra -p no:cacheprovider > $O/fw/forward_test.log 2>&1; tail -6 $O/fw/forward_test.log
timeout 130 python3 scripts/bench_forward.py --shapes 1x1,16x1,1x2048 --reps 20 --eager --out $O/fw 2>&1 | tee $O/fw/forward.log | tail -40
tar czf $O/fw.tgz -C $O fw && rm -rf $O/fw
ls -la $O
