"""Entry point: `python run.py [overrides]`, `python run.py -m quant.group_size=-1,64,128`.

Compose (Hydra) -> validate -> run the pipeline -> return the headline metric (for sweepers).
"""

import hydra
from omegaconf import DictConfig

from mosaic_exp.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from mosaic_exp.runner.entry import run_experiment

    return run_experiment(cfg)


if __name__ == "__main__":
    main()
