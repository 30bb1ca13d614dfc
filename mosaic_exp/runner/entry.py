"""From a composed Hydra config to a finished run: validate -> preflight -> pipeline."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mosaic_exp.config import validate
from mosaic_exp.logging.records import write_json

log = logging.getLogger(__name__)


def _hydra_context() -> tuple[str | None, bool, str | None]:
    """(run dir, is multirun, sweep dir) when running under Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return hc.runtime.output_dir, hc.mode == RunMode.MULTIRUN, hc.sweep.dir
    except Exception:  # noqa: BLE001 - not under @hydra.main (e.g. compose API in tests)
        return None, False, None


def run_experiment(cfg: DictConfig, run_dir: str | None = None) -> float:
    """Run one job. In a multirun a failing job records its error and returns NaN, so the sweep goes on."""
    hydra_dir, multirun, sweep_dir = _hydra_context()
    run_dir = Path(run_dir or hydra_dir or cfg.paths.output_dir)
    try:
        rcfg = validate(cfg)  # ConfigError names the bad value; before any expensive work
        from mosaic_exp.runner.pipeline import Pipeline, preflight

        preflight(rcfg)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        (run_dir / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        pipeline = Pipeline(rcfg, run_dir, resolved, sweep_group=Path(sweep_dir).name if multirun else None)
        return pipeline.run()
    except Exception as exc:
        if not (run_dir / "metrics.json").exists():
            write_json(run_dir / "metrics.json", {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                                  "config": OmegaConf.to_container(cfg, resolve=False)})
        if multirun:
            log.error("job failed (the sweep continues): %s: %s", type(exc).__name__, exc)
            return math.nan
        raise
    finally:
        wandb = sys.modules.get("wandb")  # only if a logger imported it: importing costs seconds
        if wandb is not None and wandb.run is not None:
            wandb.finish()
