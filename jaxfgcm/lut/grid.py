"""The six atmosphere axes of the look-up table: order, coordinates and node values.

Each axis is uniform in its own *coordinate* (see docs/lut.md, "Axes"): the coordinate is the
transform of the physical parameter in which the tabulated quantities (ln I0, I10) are closest
to linear, so that interpolation between nodes is accurate with few nodes. The config gives
each axis in physical units (``GridAxis(min, max, n)``); the nodes are uniform in the
coordinate between the transformed min and max.

This module is shared by the builder (node values) and the interpolator (coordinates of query
points), so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Axis names in table order (the order of the interpolator's arguments).
AXIS_NAMES: tuple[str, ...] = ("pressure", "pwv", "o3", "tau", "alpha", "secz")

#: Coordinate of each axis ("linear": the parameter itself, "log": its natural log, "sqrt"). Chosen by
#: measurement against direct integration with the built-in atmosphere (docs/lut.md, "Axes"):
#: - pressure, o3: optical depths are proportional to them, so ln I0 is nearly linear (two
#:   nodes give < 6e-5 over the whole range).
#: - pwv: water lines saturate (equivalent width ~ pwv^0.6..0.9); ln I0 is smoothest in ln pwv
#:   (1.2e-4 with 8 cubic nodes vs 4.4e-4 in sqrt pwv and 1e-2 in pwv). It is also the fit's
#:   parameter (ln PWV linear in time through the night).
#: - tau, secz: ln I0 = ln int S exp(-X (tau k(lambda) + ...)) is a cumulant generating function
#:   of the optical depth over the band: nearly linear in tau and X (curvature = the band
#:   variance of the optical depth), much more so than in ln tau (fgcm's axis).
#: - alpha: linear; exp(alpha) or sqrt(alpha) coordinates measured worse.
AXIS_COORDINATES: dict[str, str] = {
    "pressure": "linear",
    "pwv": "log",
    "o3": "linear",
    "tau": "linear",
    "alpha": "linear",
    "secz": "linear",
}

#: Axes interpolated with C1 cubic (Catmull-Rom) Hermite weights when they have >= 4 nodes;
#: the others are linear. The curvature of ln I0 along these axes (band variance of the
#: aerosol optical depth, up to ~0.1 at tau=0.35, alpha=2.5, X=3 in g) would need ~15 linear
#: nodes each to reach 5e-4; a cubic needs a handful (docs/lut.md).
CUBIC_AXES: frozenset[str] = frozenset({"pwv", "tau", "alpha", "secz"})


@dataclass(frozen=True)
class Axis:
    """One axis: name, coordinate kind, node values (physical units) and interpolation order."""

    name: str
    coordinate: str
    nodes: np.ndarray  # physical values at the nodes, float64, increasing
    cubic: bool  # cubic (True) or linear interpolation along this axis

    @property
    def n(self) -> int:
        return int(self.nodes.size)

    @property
    def coord_min(self) -> float:
        return float(to_coordinate(self.coordinate, self.nodes[0]))

    @property
    def coord_step(self) -> float:
        if self.n == 1:
            return 1.0
        lo, hi = to_coordinate(self.coordinate, self.nodes[[0, -1]])
        return float((hi - lo) / (self.n - 1))


def to_coordinate(kind: str, value, xp=np):
    """Physical value -> axis coordinate (works for NumPy and jax.numpy via ``xp``)."""
    if kind == "linear":
        return value
    if kind == "sqrt":
        return xp.sqrt(value)
    if kind == "log":
        return xp.log(value)
    raise ValueError(f"unknown axis coordinate {kind!r}")


def from_coordinate(kind: str, coord):
    """Axis coordinate -> physical value (NumPy)."""
    if kind == "linear":
        return np.asarray(coord, dtype=np.float64)
    if kind == "sqrt":
        return np.asarray(coord, dtype=np.float64) ** 2
    if kind == "log":
        return np.exp(np.asarray(coord, dtype=np.float64))
    raise ValueError(f"unknown axis coordinate {kind!r}")


def axes_from_config(lut_config) -> tuple[Axis, ...]:
    """The six axes of ``config.lut``, nodes uniform in each axis coordinate."""
    axes = []
    for name in AXIS_NAMES:
        g = getattr(lut_config, name)
        if g.n < 1:
            raise ValueError(f"lut.{name}: n must be >= 1, got {g.n}")
        if g.n > 1 and not g.max > g.min:
            raise ValueError(f"lut.{name}: max ({g.max}) must exceed min ({g.min})")
        kind = AXIS_COORDINATES[name]
        if kind == "sqrt" and g.min < 0:
            raise ValueError(f"lut.{name}: min must be >= 0 for a sqrt axis, got {g.min}")
        if kind == "log" and not g.min > 0:
            raise ValueError(f"lut.{name}: min must be > 0 for a log axis, got {g.min}")
        lo, hi = to_coordinate(kind, np.array([g.min, g.max], dtype=np.float64))
        nodes = from_coordinate(kind, np.linspace(lo, hi, g.n))
        nodes[0], nodes[-1] = g.min, g.max  # exact ends despite the round trip
        axes.append(Axis(name, kind, nodes, cubic=name in CUBIC_AXES and g.n >= 4))
    return tuple(axes)
