"""End-to-end runs on the tiny random models with the real configs and the real local data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from mosaic_exp.runner.entry import run_experiment
from tests.conftest import ROOT

TINY = ["debug=tiny", "logger=none"]


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_qwen3"])
@pytest.mark.parametrize("quant", ["fp16", "rtn", "gptq", "mosaic"])
def test_tiny_run_writes_records(compose, tmp_path, data_dir, model, quant):
    # mosaic at budget 0: the base's storage is checked here; the residual's in the budget tests below
    extra = ["residual.budget=0"] if quant == "mosaic" else []
    cfg = compose([*TINY, f"model={model}", f"quant={quant}", *extra], tmp_path)
    ppl = run_experiment(cfg, run_dir=str(tmp_path))
    assert math.isfinite(ppl) and ppl > 1
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "ok"
    assert m["headline_name"] == "ppl/wikitext2@64"
    assert m["metrics"]["eval/wikitext2_windows"] == 4
    assert len(m["config_hash"]) == 12
    assert m["environment"]["versions"]["torch"]
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "environment.json").exists()
    bpw = m["metrics"]["bits_per_weight"]
    if quant == "fp16":
        assert bpw == 32.0  # tiny configs run in float32
    else:
        # 4-bit codes + fp16 scale and 4-bit zero per 64-column group (K=64 or 160 -> groups of <=128)
        assert 4.0 < bpw < 4.7


@pytest.mark.parametrize("scope,base", [("per_layer", "rtn"), ("global", "rtn"), ("global", "gptq")])
def test_mosaic_budget_is_respected_end_to_end(compose, tmp_path, data_dir, scope, base):
    """Tiny blocks so the tiny model has enough of them; the kept fraction must equal the budget.
    (global + gptq: the default in-loop residual, second GPTQ pass after the model-wide selection)"""
    cfg = compose([*TINY, "quant=mosaic", f"quant.base={base}", "quant.a_bits=8", "residual.block_size=16",
                   "residual.budget=0.25", f"residual.scope={scope}"], tmp_path)
    ppl = run_experiment(cfg, run_dir=str(tmp_path))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert math.isfinite(ppl)
    kept = m["metrics"]["residual/kept_fraction"]
    assert m["metrics"]["bits_per_weight"] > 4.7  # base (<= 4.7, test_tiny_run_writes_records) + kept residual
    # both scopes keep floor(0.25 * all blocks) (per layer: each linear floor or ceil of its share, by the
    # largest remainder), fewer only if some blocks have no positive score
    assert 0.2 <= kept <= 0.25, kept
    layers = json.loads((tmp_path / "layers.json").read_text())
    assert any("chosen" in v for v in layers.values())
    if scope == "per_layer":
        lin = [v for v in layers.values() if "target_k" in v]
        assert sum(v["target_k"] for v in lin) == math.floor(0.25 * sum(v["num_blocks"] for v in lin))
        assert all(v["chosen"] <= v["target_k"] for v in lin)


@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_fisher_sensitivity_end_to_end(compose, tmp_path, data_dir, scope):
    """residual.sensitivity=fisher: one Fisher pass, recorded per linear, and the budget still holds."""
    cfg = compose([*TINY, "quant=mosaic", "quant.base=gptq", "residual.block_size=16", "residual.budget=0.25",
                   f"residual.scope={scope}", "residual.sensitivity=fisher", "residual.sensitivity_windows=2"],
                  tmp_path)
    ppl = run_experiment(cfg, run_dir=str(tmp_path))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert math.isfinite(ppl) and m["status"] == "ok"
    assert m["metrics"]["time/sensitivity_s"] > 0
    assert 0.2 <= m["metrics"]["residual/kept_fraction"] <= 0.25
    layers = json.loads((tmp_path / "layers.json").read_text())
    fisher = [v["fisher_mean"] for k, v in layers.items() if not k.endswith("smooth")]
    assert fisher and all(f > 0 for f in fisher)


@pytest.mark.parametrize("base", ["rtn", "gptq"])
def test_mosaic_budget_zero_is_base_only(compose, tmp_path, data_dir, base):
    """The budget-0 row of a sweep (regression: RTN base at budget 0 skipped the statistics its
    Delta-Hessian report needs) runs and keeps no residual block."""
    cfg = compose([*TINY, "quant=mosaic", f"quant.base={base}", "residual.budget=0", "residual.block_size=16"],
                  tmp_path)
    assert math.isfinite(run_experiment(cfg, run_dir=str(tmp_path)))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "ok" and m["metrics"]["residual/kept_fraction"] == 0.0


def _logits_after(compose, tmp_path, overrides, ids):
    import torch

    from mosaic_exp.config import validate
    from mosaic_exp.runner.pipeline import Pipeline

    cfg = validate(compose([*TINY, "calib.nsamples=32", *overrides], tmp_path))
    p = Pipeline(cfg, tmp_path, resolved_config={})
    p.setup()
    p.calibrate()
    p.quantize()
    with torch.inference_mode():
        return p.model(ids).logits.float()


def test_quantized_logits_approach_fp_with_more_bits(compose, tmp_path, data_dir):
    """End to end through the pipeline: W8 RTN logits are far closer to FP than W3 RTN logits, and
    GPTQ W3 (calibrated on 32 C4 windows) closer than RTN W3 on held-out WikiText-2 text."""
    from mosaic_exp.data import get_eval_tokens
    from mosaic_exp.models.loader import load_tokenizer_of

    tok = load_tokenizer_of("smollm2_135m", "~/.cache/mosaic_exp")
    ids = get_eval_tokens(tok, "wikitext2", str(data_dir))[:, : 4 * 64].reshape(4, 64)
    ref = _logits_after(compose, tmp_path / "fp", ["quant=fp16"], ids)
    err = {}
    for name, ov in {"w8": ["quant=rtn", "quant.w_bits=8"], "w3": ["quant=rtn", "quant.w_bits=3"],
                     "gptq3": ["quant=gptq", "quant.w_bits=3"]}.items():
        out = _logits_after(compose, tmp_path / name, ov, ids)
        err[name] = float((out - ref).pow(2).mean() / ref.pow(2).mean())
    assert err["w8"] < err["w3"] / 20  # 5 extra bits: ~32x smaller weight error, squared ~1000x
    assert err["gptq3"] < err["w3"]


def test_multirun_survives_a_failing_job_and_logs_offline_wandb(tmp_path, data_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "MOSAIC_DATA_DIR": str(data_dir)}
    sweep = tmp_path / "sweep"
    p = subprocess.run(
        [sys.executable, "run.py", "-m", "debug=tiny", "logger=wandb_offline", "quant.group_size=64,0,32",
         f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    metrics = sorted(sweep.rglob("metrics.json"))
    assert len(metrics) == 3
    status = {json.loads(f.read_text())["config"]["quant"]["group_size"]: json.loads(f.read_text())["status"]
              for f in metrics}
    assert status == {64: "ok", 0: "failed", 32: "ok"}
    offline_runs = list(sweep.rglob("offline-run-*"))
    assert len(offline_runs) == 2  # the failed job stopped at validation, before any logger
    table = subprocess.run([sys.executable, "-m", "mosaic_exp.logging.results_table", str(sweep)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "failed" in table.stdout and "ok" in table.stdout


def test_native_kernel_without_cuda_fails_before_loading(compose, tmp_path, data_dir):
    import time

    import torch

    from mosaic_exp.kernels import VariantUnavailable

    if torch.cuda.is_available():
        pytest.skip("this checks the no-CUDA error path")
    cfg = compose([*TINY, "kernel=zipper"], tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(VariantUnavailable, match="zipper.*no CUDA device"):
        run_experiment(cfg, run_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 5.0
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_zeroshot_through_the_pipeline(compose, tmp_path, data_dir):
    cfg = compose([*TINY, "quant=rtn", "eval=zeroshot", "eval.zeroshot=[piqa,arc_easy]", "eval.zeroshot_limit=3",
                   "eval.seqlen=64", "eval.max_windows=2"], tmp_path)
    run_experiment(cfg, run_dir=str(tmp_path))
    m = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert m["zeroshot/backend"] == "local"
    for task in ("piqa", "arc_easy"):
        acc = m[f"zeroshot/{task}/acc"]
        assert 0.0 <= acc <= 1.0


def test_eval_speed_measures_the_run_model(compose, tmp_path, data_dir):
    """eval.speed times the evaluated model's forward (eager on the CPU) and records it."""
    cfg = compose([*TINY, "quant=rtn", "eval.speed=[1x1,2x8]", "eval.speed_cuda_graph=false", "eval.speed_reps=2"],
                  tmp_path)
    run_experiment(cfg, run_dir=str(tmp_path))
    m = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert m["speed/mode"] == "eager"
    for shape, tokens in (("1x1", 1), ("2x8", 16)):
        assert m[f"speed/forward_ms_{shape}"] > 0
        assert m[f"speed/tokens_per_s_{shape}"] == pytest.approx(tokens / (m[f"speed/forward_ms_{shape}"] / 1e3))
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert [(r["batch"], r["seq"]) for r in rows] == [(1, 1), (2, 8)]


@pytest.mark.parametrize("overrides, msg", [
    (["eval.speed=[1x0]"], "eval.speed: '1x0' needs positive B and S"),
    (["eval.speed=[fast]"], "eval.speed: 'fast' is not BxS"),
    (["eval.speed=[1x1]", "eval.speed_reps=0"], "eval.speed_reps=0"),
    (["eval.speed=[1x1]", "device=cpu"], "needs a CUDA device"),
])
def test_eval_speed_bad_settings_fail_before_work(compose, tmp_path, data_dir, overrides, msg):
    from mosaic_exp.config import ConfigError

    cfg = compose([*TINY, "quant=rtn", *overrides], tmp_path)
    with pytest.raises(ConfigError, match=msg):
        run_experiment(cfg, run_dir=str(tmp_path))
    assert not (tmp_path / "quantized").exists()
