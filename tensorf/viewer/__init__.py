"""The live browser viewer (viser): `python -m tensorf.viewer --run-dir R` serves a run, and
`train.py ... --viewer` the field while it trains. `rendering` is what a frame shows (pure),
`server` the viser server and its render thread, `path_panel` the camera-path panel, `app`
the command line."""
