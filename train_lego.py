"""Train TensoRF on a Blender-format scene (NeRF-synthetic lego by default); the same
command as train.py, kept for the lego presets' documented commands.

python train_lego.py quick --dataset-path ../shared/data/nerf_synthetic/lego --run-dir runs/q
python train_lego.py paper --help
"""

from tensorf.experiment import main

if __name__ == "__main__":
    main()
