"""jaxfgcm: the Forward Global Calibration Method (Burke et al. 2018) in JAX."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: ``import jaxfgcm`` stays light (no pyarrow/JAX) until the function is used.
    if name == "apply_calibration":
        from jaxfgcm.output.photocalib import apply_calibration

        return apply_calibration
    raise AttributeError(f"module 'jaxfgcm' has no attribute {name!r}")
