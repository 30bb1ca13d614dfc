"""Config tree: composes, validates, and rejects bad input fast with a message naming the value."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mosaic_exp.config import ConfigError, config_hash, validate
from tests.conftest import CONF, ROOT


def test_default_config_composes_and_validates(compose, tmp_path):
    cfg = validate(compose([], tmp_path))
    assert cfg.model.name == "smollm2_135m"
    assert cfg.quant.w_bits == 4


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_model_config_validates(compose, tmp_path, model):
    cfg = validate(compose([f"model={model}"], tmp_path))
    assert cfg.model.name == model


@pytest.mark.parametrize("exp", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_preset_validates(compose, tmp_path, exp):
    validate(compose([f"experiment={exp}"], tmp_path))


@pytest.mark.parametrize("exp", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_job_of_every_sweep_preset_validates(compose, tmp_path, exp):
    """Each job of a preset's multirun (the product of its sweeper params) is a valid config, so a sweep
    never starts jobs that fail at validation (e.g. a selector the default residual cannot weight)."""
    import itertools

    from omegaconf import OmegaConf

    params = OmegaConf.load(CONF / "experiment" / f"{exp}.yaml").get("hydra", {}).get("sweeper", {}).get("params", {})
    axes = [[f"{k}={v.strip()}" for v in str(vals).split(",")] for k, vals in params.items()]
    for job in itertools.product(*axes):
        validate(compose([f"experiment={exp}", *job], tmp_path))


def test_config_hash_ignores_paths_and_logger(compose, tmp_path):
    a = validate(compose(["logger=none"], tmp_path / "a"))
    b = validate(compose(["logger=csv"], tmp_path / "b"))
    c = validate(compose(["quant.group_size=64"], tmp_path / "c"))
    assert config_hash(a) == config_hash(b) != config_hash(c)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("quant.w_bits=9", "quant.w_bits=9"),
        ("quant.w_bits=1", "quant.w_bits=1"),
        ("quant.group_size=0", "quant.group_size=0"),
        ("quant.group_size=-2", "quant.group_size=-2"),
        ("quant.method=awq", "quant.method='awq'"),
        ("quant.a_bits=6", "quant.a_bits=6"),
        ("calib.sink_weight=-1", "calib.sink_weight=-1"),
        ("residual.global_rank=depth", "residual.global_rank='depth'"),
        ("residual.budget=1.5", "residual.budget=1.5"),
        ("residual.budget=-0.1", "residual.budget=-0.1"),
        ("residual.block_size=0", "residual.block_size=0"),
        ("residual.selector=foo", "residual.selector='foo'"),
        ("calib.nsamples=0", "calib.nsamples=0"),
        ("calib.seqlen=100000", "calib.seqlen=100000"),
        ("eval.seqlen=100000", "eval.seqlen=100000"),
        ("kernel.variant=marlin", "kernel.variant='marlin'"),
    ],
)
def test_bad_values_rejected_with_name(compose, tmp_path, override, needle):
    with pytest.raises(ConfigError) as ei:
        validate(compose([override], tmp_path))
    assert needle in str(ei.value)
    assert "allowed" in str(ei.value) or "must" in str(ei.value) or "exceeds" in str(ei.value)


def _run_cli(args, env_extra=None, timeout=60):
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env_extra or {})}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout, env=env)
    return p, time.perf_counter() - t0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["model=no_such_model"], "no_such_model"),
        (["kernel=no_such_kernel"], "no_such_kernel"),
        (["quant.method=no_such_method"], "no_such_method"),
        (["quant.w_bits=12"], "quant.w_bits=12"),
        (["residual.budget=2"], "residual.budget=2"),
        (["calib.nsamples=-1"], "calib.nsamples=-1"),
    ],
)
def test_cli_bad_input_fails_fast(args, needle, tmp_path):
    p, secs = _run_cli([*args, f"hydra.run.dir={tmp_path}"])
    assert p.returncode != 0
    assert needle in (p.stdout + p.stderr)
    assert secs < 5.0 + 3.0, f"took {secs:.1f}s"  # 5 s budget; +3 s slack for a loaded 2-core CI box


def test_cli_missing_data_dir_offline_fails_fast(tmp_path):
    missing = tmp_path / "nowhere"
    p, secs = _run_cli([f"paths.data_dir={missing}", f"hydra.run.dir={tmp_path}"],
                       env_extra={"HF_DATASETS_OFFLINE": "1"})
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert str(missing) in out
    assert secs < 8.0, f"took {secs:.1f}s"


def test_cli_unavailable_hf_model_fails_fast_with_instructions(tmp_path):
    p, secs = _run_cli(["model=qwen3_8b", f"hydra.run.dir={tmp_path}"])
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert "Qwen/Qwen3-8B" in out and "model.path" in out
    assert secs < 8.0, f"took {secs:.1f}s"
