# Session 23's one device call (budget for one): ZipperQuant's GPU tests + overlap bench, model-level speed
# (tests + bench_forward), (NOTES v28 dropped: device budget). Carry ["native/build"].
set -u
export MOSAIC_COMMIT=${MOSAIC_COMMIT:-330c221}
O=$OUT
touch native/build/*.o
rm -f native/build/variants.tgz  # v28's variants: not this call
python3 scripts/build_native.py --reuse-objects --no-cpu > $O/build_D.log 2>&1 || echo "BUILD FAILED"
python3 scripts/build_native.py --cpu-only > $O/cpu_build.log 2>&1 || echo "CPU BUILD FAILED"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
mkdir -p $O/zq
timeout 100 python3 -m pytest tests/test_zipperquant.py -q -ra -p no:cacheprovider > $O/zq/zq_test.log 2>&1; tail -6 $O/zq/zq_test.log
timeout 90 python3 scripts/bench_zipperquant_overlap.py --profile --out $O/zq 2>&1 | tail -14
tar czf $O/zq.tgz -C $O zq && rm -rf $O/zq
mkdir -p $O/fw; STAGES=forward FWD_TIMEOUT=180 OUT=$O/fw bash scripts/device_kernels.sh 2>&1 | tail -45; tar czf $O/fw.tgz -C $O fw && rm -rf $O/fw
ls -la $O
