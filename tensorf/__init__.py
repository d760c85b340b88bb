"""TensoRF (Tensorial Radiance Fields, Chen et al. 2022) in JAX."""
