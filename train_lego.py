"""Train TensoRF on a Blender-format scene (NeRF-synthetic lego by default).

python train_lego.py quick --dataset-path ../shared/data/nerf_synthetic/lego --run-dir runs/q
python train_lego.py paper --help
"""

import tyro

from tensorf.cli import run_main
from tensorf.config import PRESETS
from tensorf.experiment import train

if __name__ == "__main__":
    run_main(lambda: train(tyro.extras.overridable_config_cli(PRESETS)))
