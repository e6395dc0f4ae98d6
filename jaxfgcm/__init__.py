"""jaxfgcm: the Forward Global Calibration Method (Burke et al. 2018) in JAX."""

__version__ = "0.1.0"
