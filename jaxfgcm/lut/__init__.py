"""Look-up table of passband integrals I0, I10 on an atmosphere grid (docs/lut.md).

Contract (docs/architecture.md, ``jaxfgcm.lut``): :func:`build_lut`, :func:`save_lut`,
:func:`load_lut` (:class:`LutMismatchError`), :class:`LutInterpolator`.
"""

from jaxfgcm.lut.build import (
    FORMAT_VERSION,
    LookupTable,
    build_lut,
    passband_integrals,
    quadrature_weights,
)
from jaxfgcm.lut.grid import AXIS_NAMES, Axis
from jaxfgcm.lut.interp import LutInterpolator
from jaxfgcm.lut.io import LutFormatError, LutMismatchError, load_lut, save_lut

__all__ = [
    "AXIS_NAMES",
    "FORMAT_VERSION",
    "Axis",
    "LookupTable",
    "LutFormatError",
    "LutInterpolator",
    "LutMismatchError",
    "build_lut",
    "load_lut",
    "passband_integrals",
    "quadrature_weights",
    "save_lut",
]
