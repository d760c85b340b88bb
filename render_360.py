"""Videos of a trained run along a camera path: an orbit for objects, the LLFF spiral for
forward-facing captures (RGB, depth, normals).

python render_360.py --run-dir runs/lego --out orbit.mp4 --frames 24
"""

from tensorf.orbit import main

if __name__ == "__main__":
    main()
