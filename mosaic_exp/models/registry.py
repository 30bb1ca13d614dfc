"""Look up model configs in conf/model by name (for borrowed tokenizers and tooling)."""

from __future__ import annotations

from pathlib import Path

from mosaic_exp.config import ModelConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def available_models() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def model_config(name: str) -> ModelConfig:
    from omegaconf import OmegaConf

    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    return ModelConfig(**OmegaConf.to_container(OmegaConf.load(path), resolve=True))
