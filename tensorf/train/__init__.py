"""Training: the state, the rays it draws from, the jitted step, the grid events of the
schedule, checkpoints and the checks of a configuration."""
