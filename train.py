"""Train TensoRF on a scene: pick a preset, then override any option.

python train.py llff-quick --dataset-path ../shared/data/nerf_llff_data/fern --run-dir runs/f
python train.py quick --dataset-path ../shared/data/nerf_synthetic/lego --run-dir runs/q
python train.py llff --help
"""

from tensorf.experiment import main

if __name__ == "__main__":
    main()
