"""Orbit videos (RGB, depth, normals) of a trained run.

python render_360.py --run-dir runs/lego --out orbit.mp4 --frames 24
"""

import tyro

from tensorf.cli import run_main
from tensorf.orbit import OrbitArgs, render_orbit

if __name__ == "__main__":
    run_main(lambda: render_orbit(tyro.cli(OrbitArgs)))
