"""Shared fixtures: the real Hydra configs (compose API) and the local data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _data_dir() -> Path | None:
    env = os.environ.get("MOSAIC_DATA_DIR")
    cand = Path(env) if env else ROOT.parent / "shared" / "data"
    return cand if cand.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if d is None:
        pytest.skip("local data dir not found: set MOSAIC_DATA_DIR or place ../shared/data beside the repo")
    return d


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch, tmp_path_factory):
    # Tests never touch the network and never write W&B runs outside tmp dirs.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE_TESTS", "offline"))
    if _data_dir() is not None:
        monkeypatch.setenv("MOSAIC_DATA_DIR", str(_data_dir()))


@pytest.fixture
def compose():
    """compose(overrides, tmp_path) -> DictConfig composed from the real conf/ tree."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from mosaic_exp.config import register_configs

    register_configs()

    def _compose(overrides=(), out_dir: Path | None = None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(out_dir or ".")
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


def load_script(name: str, folder: str = "scripts"):
    """A script of ``folder`` (scripts/, or native/exp/) as a module (its helpers are tested; the device image has
    no omegaconf, so tests that run there load model configs through bench_forward's yaml loader)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def require_native_variant(variant: str) -> None:
    """Skip (with the reason) where the native kernel variant cannot run."""
    from mosaic_exp.kernels.quant_linear import VariantUnavailable, check_variant

    try:
        check_variant(variant, "cuda")
    except VariantUnavailable as e:
        pytest.skip(str(e))
