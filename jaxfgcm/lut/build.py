"""Build the look-up table of passband integrals (Burke et al. 2018, sec. 3; docs/lut.md).

For physical filter f, detector c and atmosphere node p (pressure, pwv, o3, tau, alpha, secz):

    S_obs(lambda) = S_inst(lambda; c, f) * T_atm(lambda; p)
    I0  = int S_obs dlambda / lambda
    I1  = int S_obs (lambda - lambda_std[f]) dlambda / lambda,      I10 = I1 / I0   (Angstrom)

with lambda_std[f] the standard wavelength of the standard filter of f's band. All integrals of
all filters and detectors at all nodes are one matrix product per chunk of nodes:
T (nodes x n_lambda) @ W (n_lambda x 2 n_filter n_slot), the quadrature weights, 1/lambda and
(lambda - lambda_std) folded into W, so BLAS does the work (fgcm loops in Python; hours).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from jaxfgcm.lut.grid import AXIS_NAMES, Axis, axes_from_config

#: Version of the LookupTable layout (and of the file format written by jaxfgcm.lut.io).
FORMAT_VERSION = 1


@dataclass
class LookupTable:
    """Passband integrals on the atmosphere grid, per physical filter and detector.

    ``i0`` and ``i10`` have shape ``(n_filter, n_detector + 1, *grid_shape)`` with the grid axes
    in :data:`AXIS_NAMES` order; detector slot ``n_detector`` (``mean_detector_index``) holds the
    focal-plane-mean passband. Stored as float32: their relative precision (6e-8) is four orders
    below the interpolation accuracy bar (5e-4), and it halves the file (docs/lut.md).
    """

    physical_filters: tuple[str, ...]
    #: Band of each physical filter, and the standard filter of that band.
    bands: tuple[str, ...]
    std_filters: tuple[str, ...]
    detector_ids: np.ndarray  # int64, (n_detector,)
    axes: tuple[Axis, ...]
    wavelength: np.ndarray  # Angstrom, (n_lambda,)
    i0: np.ndarray  # float32, (n_filter, n_detector + 1, *grid)
    i10: np.ndarray  # float32, Angstrom, same shape
    #: Standard passband (focal-plane mean x standard atmosphere) values per filter (float64).
    i0_std: np.ndarray
    i10_std: np.ndarray  # Angstrom, about lambda_std of the filter's band standard filter
    i2_std: np.ndarray  # int S (lambda - lambda_std)^2 dlambda/lambda (not divided by I0), A^2
    lambda_std: np.ndarray  # Angstrom: lambda_std_filter of the band's standard filter
    lambda_std_filter: np.ndarray  # Angstrom: mean wavelength of this filter's std passband
    lambda_b: np.ndarray  # Angstrom: mean wavelength of the mean instrument passband alone
    #: Standard atmosphere: parameters (AXIS_NAMES keys) and transmission on ``wavelength``.
    std_atmosphere: dict[str, float]
    std_transmission: np.ndarray
    aerosol_lambda_norm: float
    wavelength_step: float
    atmosphere_model: str = ""
    build_seconds: float = float("nan")
    format_version: int = FORMAT_VERSION
    meta: dict = field(default_factory=dict)

    @property
    def mean_detector_index(self) -> int:
        """Detector slot of the focal-plane-mean passband."""
        return int(self.detector_ids.size)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(a.n for a in self.axes)

    def filter_index(self, physical_filter: str) -> int:
        try:
            return self.physical_filters.index(physical_filter)
        except ValueError:
            raise KeyError(
                f"physical filter {physical_filter!r} is not in the LUT {self.physical_filters}"
            ) from None

    def detector_index(self, detector_ids) -> np.ndarray:
        """Detector ids -> LUT detector slots (KeyError naming ids not in the table)."""
        ids = np.asarray(detector_ids)
        order = np.argsort(self.detector_ids)
        pos = np.searchsorted(self.detector_ids, ids, sorter=order)
        pos = np.clip(pos, 0, self.detector_ids.size - 1)
        slot = order[pos]
        bad = self.detector_ids[slot] != ids
        if np.any(bad):
            raise KeyError(f"detector ids {np.unique(ids[bad])[:10].tolist()} are not in the LUT")
        return slot

    def std_filter_index(self, physical_filter: str) -> int:
        """Index of the standard filter of ``physical_filter``'s band (its I10_std is the band's)."""
        return self.filter_index(self.std_filters[self.filter_index(physical_filter)])


def quadrature_weights(wavelength: np.ndarray) -> np.ndarray:
    """Trapezoid weights for int f dlambda / lambda on ``wavelength`` (1/lambda folded in)."""
    lam = np.asarray(wavelength, dtype=np.float64)
    w = np.zeros_like(lam)
    d = np.diff(lam)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w / lam


def passband_integrals(transmission, passbands, wavelength, lambda_ref):
    """Direct I0 and I10 of every passband through every transmission curve.

    transmission: (..., n_lambda); passbands: (m, n_lambda); lambda_ref: (m,) Angstrom.
    Returns i0, i10 of shape (..., m) in float64. This is the definition the LUT tabulates;
    tests compare the interpolated table against it.
    """
    lam = np.asarray(wavelength, dtype=np.float64)
    w = quadrature_weights(lam)
    s = np.atleast_2d(np.asarray(passbands, dtype=np.float64)) * w
    dl = lam[None, :] - np.asarray(lambda_ref, dtype=np.float64).reshape(-1, 1)
    t = np.asarray(transmission, dtype=np.float64)
    i0 = t @ s.T
    i1 = t @ (s * dl).T
    return i0, i1 / i0


def _mean_wavelength(passband, wavelength) -> float:
    w = quadrature_weights(wavelength) * passband
    return float(np.sum(w * wavelength) / np.sum(w))


def _default_atmosphere(config, wavelength):
    from jaxfgcm.atmosphere import BuiltinAtmosphere

    return BuiltinAtmosphere(wavelength=wavelength, lambda_norm=config.lut.aerosol_lambda_norm)


def config_wavelength(lut_config) -> np.ndarray:
    """The integration wavelength grid of ``config.lut`` (Angstrom, both ends included)."""
    lo, hi, step = lut_config.wavelength_min, lut_config.wavelength_max, lut_config.wavelength_step
    if not (step > 0 and hi > lo):
        raise ValueError(f"lut: bad wavelength range {lo}..{hi} step {step}")
    n = round((hi - lo) / step) + 1
    return lo + step * np.arange(n, dtype=np.float64)


def standard_parameters(config) -> dict[str, float]:
    sa = config.standard_atmosphere
    return {
        "pressure": sa.pressure,
        "pwv": sa.pwv,
        "o3": sa.o3,
        "tau": sa.tau,
        "alpha": sa.alpha,
        "secz": sa.airmass,
    }


def build_lut(config, throughput, camera, atmosphere=None, progress=True) -> LookupTable:
    """Tabulate I0 and I10 for every physical filter of ``config`` and detector of ``camera``.

    ``atmosphere`` defaults to ``BuiltinAtmosphere`` on the config's wavelength grid with the
    config's aerosol normalisation wavelength; a given one must use that same wavelength grid.
    Prints progress (``progress=True``) and the build time; ``lut.build_seconds`` records it.
    """
    t_start = time.perf_counter()
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda m: None)

    lam = config_wavelength(config.lut)
    if atmosphere is None:
        atmosphere = _default_atmosphere(config, lam)
    atm_lam = np.asarray(atmosphere.wavelength, dtype=np.float64)
    if atm_lam.shape != lam.shape or not np.allclose(atm_lam, lam, rtol=0, atol=1e-6):
        raise ValueError(
            f"atmosphere wavelength grid ({atm_lam[0]}..{atm_lam[-1]}, {atm_lam.size} points) "
            f"differs from config.lut ({lam[0]}..{lam[-1]}, {lam.size} points)"
        )
    axes = axes_from_config(config.lut)
    filters = tuple(config.instrument.physical_filters)
    missing = [f for f in filters if f not in throughput.physical_filters]
    if missing:
        raise ValueError(f"throughput has no passband for physical filters {missing}")
    bands = tuple(config.instrument.physical_filters[f] for f in filters)
    std_filters = []
    for f, b in zip(filters, bands):
        sf = config.instrument.std_physical_filters.get(b)
        if sf is None or sf not in config.instrument.physical_filters:
            raise ValueError(f"band {b!r} of {f} has no standard physical filter in the config")
        std_filters.append(sf)
    det_ids = np.asarray(camera.ids, dtype=np.int64)
    n_f, n_d = len(filters), det_ids.size
    n_slot = n_d + 1

    # Instrument passbands, (n_filter, n_slot, n_lambda); the last slot is the focal-plane mean.
    pb = np.empty((n_f, n_slot, lam.size), dtype=np.float64)
    for i, f in enumerate(filters):
        pb[i, :n_d] = throughput.passbands(f, lam, det_ids)
        pb[i, n_d] = throughput.mean_passband(f, lam)
    if np.any(~np.isfinite(pb)) or np.any(pb < 0):
        raise ValueError("throughput passbands must be finite and non-negative")
    empty = np.argwhere(pb.sum(axis=-1) <= 0)
    if empty.size:
        f, d = empty[0]
        raise ValueError(f"passband of {filters[f]} slot {d} is zero over {lam[0]}..{lam[-1]} A")

    # Standard values (fgcm-reference sec. 2.3): lambda_b without atmosphere, lambda_std with the
    # standard atmosphere, both on the focal-plane-mean passband.
    std = standard_parameters(config)
    std_trans = np.asarray(atmosphere.transmission(**std), dtype=np.float64).reshape(lam.size)
    lambda_b = np.array([_mean_wavelength(pb[i, n_d], lam) for i in range(n_f)])
    lambda_std_filter = np.array([_mean_wavelength(pb[i, n_d] * std_trans, lam) for i in range(n_f)])
    lambda_std = np.array([lambda_std_filter[filters.index(sf)] for sf in std_filters])
    w = quadrature_weights(lam)
    mean_std = pb[:, n_d] * std_trans * w
    dl = lam[None, :] - lambda_std[:, None]
    i0_std = mean_std.sum(axis=1)
    i10_std = (mean_std * dl).sum(axis=1) / i0_std
    i2_std = (mean_std * dl**2).sum(axis=1)

    # Weight matrix: columns [I0 of every (filter, slot) | I1 of every (filter, slot)].
    s = (pb * w).reshape(n_f * n_slot, lam.size)
    dl_slot = np.repeat(dl, n_slot, axis=0)
    weights = np.concatenate([s, s * dl_slot], axis=0).T.copy()  # (n_lambda, 2 n_f n_slot)

    mesh = np.meshgrid(*[a.nodes for a in axes], indexing="ij")
    params = {name: m.ravel() for name, m in zip(AXIS_NAMES, mesh)}
    n_nodes = mesh[0].size
    i0 = np.empty((n_f * n_slot, n_nodes), dtype=np.float32)
    i10 = np.empty((n_f * n_slot, n_nodes), dtype=np.float32)
    # Chunk so the transmission block stays ~16 MB (the atmosphere model makes a few temporaries).
    chunk = max(1, (2 << 20) // lam.size)
    log(
        f"build_lut: {n_f} filters x {n_d} detectors (+ mean) x {n_nodes} grid nodes "
        f"{tuple(a.n for a in axes)} x {lam.size} wavelengths"
    )
    next_report = 0.1
    for start in range(0, n_nodes, chunk):
        sl = slice(start, min(start + chunk, n_nodes))
        trans = atmosphere.transmission(**{k: v[sl] for k, v in params.items()})
        out = np.asarray(trans, dtype=np.float64) @ weights
        m = n_f * n_slot
        i0_blk = out[:, :m]
        if np.any(~(i0_blk > 0)):
            raise ValueError("atmosphere transmission gave a non-positive I0 on the grid")
        i0[:, sl] = i0_blk.T
        i10[:, sl] = (out[:, m:] / i0_blk).T
        done = sl.stop / n_nodes
        if done >= next_report or sl.stop == n_nodes:
            log(f"build_lut: {100 * done:5.1f}% ({time.perf_counter() - t_start:.1f} s)")
            next_report = done + 0.1

    shape = (n_f, n_slot) + tuple(a.n for a in axes)
    elapsed = time.perf_counter() - t_start
    log(f"build_lut: done in {elapsed:.1f} s")
    return LookupTable(
        physical_filters=filters,
        bands=bands,
        std_filters=tuple(std_filters),
        detector_ids=det_ids,
        axes=axes,
        wavelength=lam,
        i0=i0.reshape(shape),
        i10=i10.reshape(shape),
        i0_std=i0_std,
        i10_std=i10_std,
        i2_std=i2_std,
        lambda_std=lambda_std,
        lambda_std_filter=lambda_std_filter,
        lambda_b=lambda_b,
        std_atmosphere=std,
        std_transmission=std_trans,
        aerosol_lambda_norm=float(config.lut.aerosol_lambda_norm),
        wavelength_step=float(config.lut.wavelength_step),
        atmosphere_model=type(atmosphere).__name__,
        build_seconds=elapsed,
    )
