"""Atmospheric transmission T(lambda; pressure, pwv, o3, tau, alpha, secz) for the look-up table.

Two models with the same interface (see docs/atmosphere.md for the physics and validation):

* :class:`BuiltinAtmosphere` - the default. A product of five components: Rayleigh scattering
  (Bodhaine et al. 1999, eq. 30, scaled by pressure), aerosol (Angstrom power law), ozone
  (cross-section x column x ozone-layer airmass), and water vapour and O2 as per-wavelength curves
  of growth ``tau(u) = a u / sqrt(1 + c u)``. The O3 cross-section and the H2O/O2 curve-of-growth
  coefficients come from ``jaxfgcm/data/atmosphere_coefficients.npz``, derived by
  ``scripts/derive_atmosphere_coefficients.py`` from fgcm's Apache-2.0 MODTRAN table.
* :func:`read_fgcm_atmosphere_table` - fgcm's MODTRAN component tables (FITS), interpolated on
  their nodes, for users who have fgcm's full tables.

Units everywhere: wavelength in Angstrom, pressure in mbar, pwv in mm, o3 in Dobson units, tau the
aerosol optical depth at ``lambda_norm``, alpha dimensionless, secz = sec(zenith distance).
Parameters broadcast together with NumPy rules to a shape S; results have shape S + (n_lambda,).

Arrays are float64: transmissions are integrated over passbands to sub-mmag precision, and
float64 keeps the product of five components and the exp of summed optical depths exact enough
(float32 would leave ~1e-7 relative rounding per term, harmless, but the memory saving is not
needed at LUT sizes and one dtype throughout avoids surprises downstream).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMPONENTS = ("rayleigh", "aerosol", "o3", "h2o", "o2")

#: Standard sea-level pressure of Bodhaine et al. (1999), mbar.
BODHAINE_PRESSURE_MBAR = 1013.25

#: Parameter combinations evaluated per block: bounds the temporaries to a few tens of MB while
#: keeping NumPy's per-call overhead negligible.
_BLOCK_ROWS = 1024


class AtmosphereTableError(ValueError):
    """An fgcm atmosphere table cannot be used (the message names the file and the problem)."""


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------


def default_wavelength() -> np.ndarray:
    """The default wavelength grid: 3000-11000 Angstrom in 5 Angstrom steps (1601 points)."""
    return np.linspace(3000.0, 11000.0, 1601)


def rayleigh_optical_depth(wavelength: np.ndarray, pressure: float | np.ndarray = 1013.25):
    """Rayleigh optical depth at zenith, Bodhaine et al. (1999) eq. 30, times P / 1013.25 mbar.

    ``wavelength`` in Angstrom; the formula takes micrometres (standard air, 360 ppm CO2).
    """
    lam_um = np.asarray(wavelength, dtype=np.float64) * 1e-4
    lam2 = lam_um * lam_um
    tau_sea_level = (
        0.0021520
        * (1.0455996 - 341.29061 / lam2 - 0.90230850 * lam2)
        / (1.0 + 0.0027059889 / lam2 - 85.968563 * lam2)
    )
    return tau_sea_level * (np.asarray(pressure, dtype=np.float64) / BODHAINE_PRESSURE_MBAR)


def equivalent_width(wavelength: np.ndarray, transmission: np.ndarray, band=None) -> np.ndarray:
    """Equivalent width integral(1 - T) d lambda (Angstrom, trapezoid rule) over ``band``.

    ``band`` = (lo, hi) in Angstrom restricts the integral to lo <= lambda <= hi; the last axis of
    ``transmission`` is wavelength.
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    sel = (
        np.ones(wavelength.shape, bool)
        if band is None
        else ((wavelength >= band[0]) & (wavelength <= band[1]))
    )
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
    return trapezoid(1.0 - np.asarray(transmission)[..., sel], wavelength[sel], axis=-1)


def _broadcast_parameters(pressure, pwv, o3, tau, alpha, secz):
    """Broadcast the six parameters to a common shape S and flatten them (float64)."""
    arrays = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (pressure, pwv, o3, tau, alpha, secz))
    )
    shape = arrays[0].shape
    names = ("pressure", "pwv", "o3", "tau", "alpha", "secz")
    for name, a in zip(names, arrays):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"atmosphere parameter {name} has non-finite values")
    for name in ("pressure", "pwv", "o3", "tau"):
        a = arrays[names.index(name)]
        if np.any(a < 0):
            raise ValueError(f"atmosphere parameter {name} must be >= 0 (got min {a.min()})")
    if np.any(arrays[5] < 1.0):
        raise ValueError(f"secz must be >= 1 (got min {arrays[5].min()})")
    return shape, [a.reshape(-1) for a in arrays]


def _aerosol_transmission(log_lam_ratio, tau, alpha, secz):
    """exp(-tau X (lambda/lambda_norm)^-alpha) for flat parameter vectors -> (n, n_lambda)."""
    return np.exp(-(tau * secz)[:, None] * np.exp(-alpha[:, None] * log_lam_ratio[None, :]))


# --------------------------------------------------------------------------------------------
# Built-in physical model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtmosphereCoefficients:
    """Per-wavelength coefficients of the built-in model (see scripts/derive_...py)."""

    wavelength: np.ndarray  # Angstrom, the grid the coefficients were derived on
    o3_tau_per_du: np.ndarray  # ozone vertical optical depth per Dobson unit
    o3_layer_height_km: float  # effective ozone-layer height above the site (airmass geometry)
    earth_radius_km: float
    h2o_a: np.ndarray  # curve of growth tau = a u / sqrt(1 + c u), u = pwv * secz (mm)
    h2o_c: np.ndarray
    o2_a: np.ndarray  # same, u = secz * P / o2_reference_pressure
    o2_c: np.ndarray
    o2_reference_pressure: float  # mbar (the MODTRAN site pressure the O2 fit is relative to)
    source: str


def load_coefficients(path: str | Path | None = None) -> AtmosphereCoefficients:
    """Read the derived coefficient file (default: the one shipped in jaxfgcm/data/)."""
    if path is None:
        ref = importlib.resources.files("jaxfgcm") / "data" / "atmosphere_coefficients.npz"
        with importlib.resources.as_file(ref) as p:
            return load_coefficients(p)
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise AtmosphereTableError(f"{path}: cannot read atmosphere coefficients ({exc})") from exc
    fields = AtmosphereCoefficients.__dataclass_fields__
    missing = [k for k in fields if k not in d]
    if missing:
        raise AtmosphereTableError(f"{path}: missing arrays {missing}")
    scalars = {"o3_layer_height_km", "earth_radius_km", "o2_reference_pressure"}
    kw = {}
    for k in fields:
        if k == "source":
            kw[k] = str(d[k])
        elif k in scalars:
            kw[k] = float(d[k])
        else:
            kw[k] = np.asarray(d[k], dtype=np.float64)
    return AtmosphereCoefficients(**kw)


def ozone_airmass(secz, layer_height_km: float, earth_radius_km: float):
    """Airmass of a thin ozone layer at ``layer_height_km`` above the site (spherical shell).

    X_O3 = 1 / sqrt(1 - (R / (R + h))^2 sin^2 z). The ozone peak lies ~20 km up, so at large
    zenith distance its slant path is shorter than sec z (2 % at z = 70 deg).
    """
    secz = np.asarray(secz, dtype=np.float64)
    sin2 = 1.0 - 1.0 / (secz * secz)
    k = (earth_radius_km / (earth_radius_km + layer_height_km)) ** 2
    return 1.0 / np.sqrt(1.0 - k * sin2)


def curve_of_growth(a: np.ndarray, c: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Band-averaged optical depth of saturated lines: tau = a u / sqrt(1 + c u).

    Weak-line limit tau = a u (linear in the absorber column u); strong-line limit
    tau = sqrt(a^2 u / c) (square-root law). ``u`` has shape (n,), a and c (n_lambda,).
    """
    u = np.asarray(u, dtype=np.float64)[:, None]
    return a[None, :] * u / np.sqrt(1.0 + c[None, :] * u)


class BuiltinAtmosphere:
    """Physical component model of the atmosphere (no external data needed at run time).

    ``wavelength``: Angstrom, within 3000-11000 (the range of the derived coefficients, which are
    interpolated linearly onto it); default 3000-11000 step 5. ``lambda_norm``: aerosol
    normalisation wavelength (Angstrom).
    """

    def __init__(self, wavelength=None, lambda_norm: float = 7750.0, coefficients=None):
        coeffs = coefficients if coefficients is not None else load_coefficients()
        wl = default_wavelength() if wavelength is None else np.asarray(wavelength, np.float64)
        if wl.ndim != 1 or wl.size == 0 or not np.all(np.isfinite(wl)):
            raise ValueError("wavelength must be a non-empty 1-d array of finite values")
        lo, hi = coeffs.wavelength[0], coeffs.wavelength[-1]
        if wl.min() < lo or wl.max() > hi:
            raise ValueError(
                f"wavelength range {wl.min()}-{wl.max()} A exceeds the built-in model's "
                f"{lo}-{hi} A (the range of its derived coefficients)"
            )
        self.wavelength = wl
        self.lambda_norm = float(lambda_norm)
        self.coefficients = coeffs

        def on_grid(v):
            return np.interp(wl, coeffs.wavelength, v)

        self._tau_rayleigh_per_mbar = rayleigh_optical_depth(wl, 1.0)
        self._log_lam_ratio = np.log(wl / self.lambda_norm)
        self._o3_k = on_grid(coeffs.o3_tau_per_du)
        self._h2o_a, self._h2o_c = on_grid(coeffs.h2o_a), on_grid(coeffs.h2o_c)
        self._o2_a, self._o2_c = on_grid(coeffs.o2_a), on_grid(coeffs.o2_c)

    # Optical depths for flat parameter vectors (n,) -> (n, n_lambda).
    def _optical_depths(self, p, pwv, o3, secz):
        c = self.coefficients
        x_o3 = ozone_airmass(secz, c.o3_layer_height_km, c.earth_radius_km)
        return {
            "rayleigh": (p * secz)[:, None] * self._tau_rayleigh_per_mbar[None, :],
            "o3": (o3 * x_o3)[:, None] * self._o3_k[None, :],
            "h2o": curve_of_growth(self._h2o_a, self._h2o_c, pwv * secz),
            "o2": curve_of_growth(self._o2_a, self._o2_c, secz * p / c.o2_reference_pressure),
        }

    def components(self, pressure, pwv, o3, tau, alpha, secz) -> dict[str, np.ndarray]:
        """Each component's transmission, keys ``rayleigh, aerosol, o3, h2o, o2``."""
        shape, (p, w, o, t, a, x) = _broadcast_parameters(pressure, pwv, o3, tau, alpha, secz)
        out = {k: np.empty((p.size, self.wavelength.size)) for k in COMPONENTS}
        for s in _blocks(p.size):
            for k, v in self._optical_depths(p[s], w[s], o[s], x[s]).items():
                out[k][s] = np.exp(-v)
            out["aerosol"][s] = _aerosol_transmission(self._log_lam_ratio, t[s], a[s], x[s])
        return {k: v.reshape(shape + (self.wavelength.size,)) for k, v in out.items()}

    def transmission(self, pressure, pwv, o3, tau, alpha, secz) -> np.ndarray:
        """Total transmission, shape S + (n_lambda,)."""
        shape, (p, w, o, t, a, x) = _broadcast_parameters(pressure, pwv, o3, tau, alpha, secz)
        out = np.empty((p.size, self.wavelength.size))
        for s in _blocks(p.size):
            depth = sum(self._optical_depths(p[s], w[s], o[s], x[s]).values())
            aerosol = (t[s] * x[s])[:, None] * np.exp(-a[s][:, None] * self._log_lam_ratio)
            np.exp(-(depth + aerosol), out=out[s])
        return out.reshape(shape + (self.wavelength.size,))


def _blocks(n: int):
    return [slice(i, min(i + _BLOCK_ROWS, n)) for i in range(0, max(n, 1), _BLOCK_ROWS)]


# --------------------------------------------------------------------------------------------
# fgcm MODTRAN tables
# --------------------------------------------------------------------------------------------

_REQUIRED_PARS = (
    "ELEVATION",
    "PMBELEVATION",
    "PMBSTD",
    "PWVSTD",
    "O3STD",
    "TAUSTD",
    "ALPHASTD",
    "AIRMASSSTD",
    "LAMBDANORM",
    "ATMLAMBDA",
    "O3",
    "O3DELTA",
    "SECZENITH",
    "SECZENITHDELTA",
)


class FgcmAtmosphereTable:
    """An fgcm atmosphere table (PARS, PWVATM, O3ATM, O2ATM, RAYATM), interpolated on its nodes.

    Components are interpolated on the table's nodes linearly in optical depth -ln T (exact for
    O3 in its column and for optically thin absorbers in secz; measured to reproduce fgcm's
    ATMSTDTRANS far better than interpolating T, docs/atmosphere.md): H2O in (ln pwv, secz), O3
    in (o3, secz), O2 and Rayleigh in secz. Aerosol is analytic,
    exp(-tau secz (lambda/LAMBDANORM)^-alpha). Pressure enters as fgcm applies it, a gray factor
    exp(-(P - Pe)/Pe)^1.6 with Pe = PMBELEVATION (the pressure the tables were computed at);
    it is folded into the ``rayleigh`` component so that the product of the five components is
    the total transmission. Parameters outside the node range raise ValueError (no extrapolation).

    The PWV axis keeps only nodes within PARS' [min, max] range: fgcm writes one extra node beyond
    the grid, which in the test tables is not a valid atmosphere (docs/atmosphere.md).
    """

    def __init__(
        self, path, pars, pwv_nodes, pwv_axis_is_log, h2o, o3_nodes, o3, secz_nodes, o2, rayleigh
    ):
        self.path = Path(path)
        self.wavelength = np.asarray(pars["ATMLAMBDA"], dtype=np.float64)
        self.elevation_m = float(pars["ELEVATION"])
        self.pressure_elevation = float(pars["PMBELEVATION"])
        self.lambda_norm = float(pars["LAMBDANORM"])
        #: fgcm's standard atmosphere (keys pressure, pwv, o3, tau, alpha, secz).
        self.standard = {
            "pressure": float(pars["PMBSTD"]),
            "pwv": float(pars["PWVSTD"]),
            "o3": float(pars["O3STD"]),
            "tau": float(pars["TAUSTD"]),
            "alpha": float(pars["ALPHASTD"]),
            "secz": float(pars["AIRMASSSTD"]),
        }
        self.standard_transmission = (
            np.asarray(pars["ATMSTDTRANS"], np.float64) if "ATMSTDTRANS" in pars else None
        )
        self.pwv_nodes = pwv_nodes  # mm
        self.o3_nodes = o3_nodes  # DU
        self.secz_nodes = secz_nodes
        self._pwv_axis_is_log = pwv_axis_is_log
        self.h2o_table, self.o3_table = h2o, o3  # (node, secz node, lambda)
        self.o2_table, self.rayleigh_table = o2, rayleigh  # (secz node, lambda)
        # Optical depths; saturated bins (T = 0 in the Hartley band at high airmass) are capped
        # at tau = 69 (T = 1e-30) so that interpolation weights stay finite.
        self._depth = {
            k: -np.log(np.clip(v, 1e-30, 1.0))
            for k, v in (("h2o", h2o), ("o3", o3), ("o2", o2), ("rayleigh", rayleigh))
        }
        self._log_lam_ratio = np.log(self.wavelength / self.lambda_norm)

    def pressure_factor(self, pressure):
        """fgcm's gray pressure factor exp(-(P - Pe)/Pe)^1.6."""
        pe = self.pressure_elevation
        return np.exp(-(np.asarray(pressure, np.float64) - pe) / pe) ** 1.6

    def _pwv_coordinate(self, pwv):
        if self._pwv_axis_is_log:
            if np.any(pwv <= 0):
                raise ValueError("pwv must be > 0 for a table interpolated in ln(pwv)")
            return np.log(pwv), np.log(self.pwv_nodes)
        return pwv, self.pwv_nodes

    def components(self, pressure, pwv, o3, tau, alpha, secz) -> dict[str, np.ndarray]:
        """Each component's transmission, keys ``rayleigh, aerosol, o3, h2o, o2``."""
        shape, (p, w, o, t, a, x) = _broadcast_parameters(pressure, pwv, o3, tau, alpha, secz)
        iz, fz = _locate(x, self.secz_nodes, "secz", self.path)
        w_coord, w_nodes = self._pwv_coordinate(w)
        iw, fw = _locate(w_coord, w_nodes, "pwv", self.path)
        io, fo = _locate(o, self.o3_nodes, "o3", self.path)
        d = self._depth
        out = {
            "rayleigh": np.exp(-_lerp1(d["rayleigh"], iz, fz)) * self.pressure_factor(p)[:, None],
            "aerosol": _aerosol_transmission(self._log_lam_ratio, t, a, x),
            "o3": np.exp(-_lerp2(d["o3"], io, fo, iz, fz)),
            "h2o": np.exp(-_lerp2(d["h2o"], iw, fw, iz, fz)),
            "o2": np.exp(-_lerp1(d["o2"], iz, fz)),
        }
        return {k: v.reshape(shape + (self.wavelength.size,)) for k, v in out.items()}

    def transmission(self, pressure, pwv, o3, tau, alpha, secz) -> np.ndarray:
        """Total transmission (product of the components), shape S + (n_lambda,)."""
        comps = self.components(pressure, pwv, o3, tau, alpha, secz)
        total = comps.pop("rayleigh")
        for v in comps.values():
            total *= v
        return total


def _locate(values, nodes, name, path):
    """Index of the lower node and the fractional position, for linear interpolation."""
    lo, hi = nodes[0], nodes[-1]
    tol = 1e-9 * max(1.0, abs(hi - lo))
    if np.any(values < lo - tol) or np.any(values > hi + tol):
        raise ValueError(
            f"{path}: {name} outside the table's node range [{lo:g}, {hi:g}] "
            f"(got {values.min():g}..{values.max():g})"
        )
    i = np.clip(np.searchsorted(nodes, values, side="right") - 1, 0, len(nodes) - 2)
    f = np.clip((values - nodes[i]) / (nodes[i + 1] - nodes[i]), 0.0, 1.0)
    return i, f[:, None]


def _lerp1(table, i, f):
    return table[i] * (1.0 - f) + table[i + 1] * f


def _lerp2(table, i, fi, j, fj):
    lower = table[i, j] * (1.0 - fj) + table[i, j + 1] * fj
    upper = table[i + 1, j] * (1.0 - fj) + table[i + 1, j + 1] * fj
    return lower * (1.0 - fi) + upper * fi


def read_fgcm_atmosphere_table(path) -> FgcmAtmosphereTable:
    """Read an fgcm-format atmosphere table (FITS). Bad input -> AtmosphereTableError."""
    from astropy.io import fits  # astropy is only needed for this reader

    path = Path(path)
    if not path.is_file():
        raise AtmosphereTableError(f"{path}: no such file")
    try:
        hdul = fits.open(path, memmap=False)
    except Exception as exc:  # astropy raises OSError/ValueError/TypeError for non-FITS input
        raise AtmosphereTableError(f"{path}: not a readable FITS file ({exc})") from exc
    with hdul:
        names = [h.name for h in hdul]
        for ext in ("PARS", "PWVATM", "O3ATM", "O2ATM", "RAYATM"):
            if ext not in names:
                raise AtmosphereTableError(
                    f"{path}: missing HDU {ext} (found {names}); not an fgcm atmosphere table"
                )
        try:
            rec = hdul["PARS"].data
            columns = list(rec.columns.names)
        except (AttributeError, TypeError) as exc:
            raise AtmosphereTableError(f"{path}: HDU PARS is not a binary table") from exc
        missing = [c for c in _REQUIRED_PARS if c not in columns]
        if "LNPWV" not in columns and "PWV" not in columns:
            missing.append("LNPWV (or PWV)")
        if missing or len(rec) < 1:
            raise AtmosphereTableError(f"{path}: HDU PARS lacks columns {missing} or rows")
        pars = {c: np.asarray(rec[c][0]) for c in columns}
        arrays = {}
        for ext in ("PWVATM", "O3ATM", "O2ATM", "RAYATM"):
            data = hdul[ext].data
            if data is None:
                raise AtmosphereTableError(f"{path}: HDU {ext} holds no data")
            arrays[ext] = np.asarray(data, dtype=np.float64)

    wl = np.asarray(pars["ATMLAMBDA"], np.float64).ravel()
    n_l = wl.size
    if n_l < 2 or not np.all(np.diff(wl) > 0):
        raise AtmosphereTableError(f"{path}: ATMLAMBDA is not an increasing wavelength grid")
    pars["ATMLAMBDA"] = wl
    h2o, o3, o2, ray = (arrays[e] for e in ("PWVATM", "O3ATM", "O2ATM", "RAYATM"))
    n_z = o2.shape[0] if o2.ndim == 2 else -1
    expected = {"O2ATM": (n_z, n_l), "RAYATM": (n_z, n_l)}
    for ext, shp in expected.items():
        if arrays[ext].shape != shp or n_z < 2:
            raise AtmosphereTableError(
                f"{path}: HDU {ext} has shape {arrays[ext].shape}, expected (n_secz>=2, {n_l})"
            )
    for ext in ("PWVATM", "O3ATM"):
        a = arrays[ext]
        if a.ndim != 3 or a.shape[1:] != (n_z, n_l) or a.shape[0] < 2:
            raise AtmosphereTableError(
                f"{path}: HDU {ext} has shape {a.shape}, expected (n>=2, {n_z}, {n_l})"
            )
    for ext, a in arrays.items():
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1 + 1e-6:
            raise AtmosphereTableError(f"{path}: HDU {ext} holds values outside [0, 1]")

    def nodes(col, n):
        start = float(np.atleast_1d(pars[col])[0])
        return start + float(pars[col + "DELTA"]) * np.arange(n)

    if "LNPWV" in pars:
        pwv_col, is_log = "LNPWV", True
    else:
        pwv_col, is_log = "PWV", False
    if pwv_col + "DELTA" not in pars:
        raise AtmosphereTableError(f"{path}: HDU PARS lacks column {pwv_col}DELTA")
    pwv_coord = nodes(pwv_col, h2o.shape[0])
    # fgcm stores one node past the grid maximum; keep only nodes within PARS' [min, max].
    pwv_max = float(np.atleast_1d(pars[pwv_col])[-1])
    keep = pwv_coord <= pwv_max + 1e-5 * max(1.0, abs(pwv_max))
    if keep.sum() < 2:
        raise AtmosphereTableError(f"{path}: fewer than two valid PWV nodes")
    pwv_nodes = np.exp(pwv_coord[keep]) if is_log else pwv_coord[keep]
    secz_nodes = nodes("SECZENITH", n_z)
    o3_nodes = nodes("O3", o3.shape[0])
    for name, v in (("SECZENITH", secz_nodes), ("O3", o3_nodes), (pwv_col, pwv_coord)):
        if not np.all(np.diff(v) > 0):
            raise AtmosphereTableError(f"{path}: {name} nodes are not increasing")
    return FgcmAtmosphereTable(
        path, pars, pwv_nodes, is_log, h2o[keep], o3_nodes, o3, secz_nodes, o2, ray
    )


# --------------------------------------------------------------------------------------------
# Validation against a MODTRAN table
# --------------------------------------------------------------------------------------------

#: Band regions (Angstrom) over which component equivalent widths are compared.
VALIDATION_BANDS = {
    "rayleigh": {"all": (3000.0, 11000.0)},
    "o3": {"all": (3000.0, 11000.0), "Chappuis 5000-7000": (5000.0, 7000.0)},
    "h2o": {"all": (3000.0, 11000.0), "9000-9900": (9000.0, 9900.0)},
    "o2": {
        "all": (3000.0, 11000.0),
        "A 7580-7720": (7580.0, 7720.0),
        "B 6860-6960": (6860.0, 6960.0),
    },
}


def compare_equivalent_widths(reference: FgcmAtmosphereTable, model, secz=None):
    """Component equivalent widths of ``model`` vs ``reference`` on the reference's nodes.

    Both are evaluated at the reference's site pressure (where its components were computed), on
    the reference's wavelength grid. H2O is compared at every valid PWV node, O3 at every O3
    node, Rayleigh and O2 at each secz. Returns rows (component, band, node label, secz,
    EW_reference, EW_model, percent difference). ``secz`` defaults to the reference's secz nodes
    up to 3 (1.0 and 2.9238 for fgcm's test tables).
    """
    if not np.array_equal(np.asarray(model.wavelength), reference.wavelength):
        raise ValueError("model and reference must share one wavelength grid")
    if secz is None:
        secz = [float(x) for x in reference.secz_nodes if x <= 3.0]
    p0 = reference.pressure_elevation
    std = reference.standard
    rows = []
    for x in secz:
        cases = [("rayleigh", "", {}), ("o2", "", {})]
        cases += [("h2o", f"pwv={v:g}mm", {"pwv": v}) for v in reference.pwv_nodes]
        cases += [("o3", f"o3={v:g}DU", {"o3": v}) for v in reference.o3_nodes]
        for comp, label, changes in cases:
            par = {
                "pressure": p0,
                "pwv": std["pwv"],
                "o3": std["o3"],
                "tau": 0.0,
                "alpha": 1.0,
                "secz": x,
                **changes,
            }
            t_ref = reference.components(**par)[comp]
            t_mod = model.components(**par)[comp]
            for band_name, band in VALIDATION_BANDS[comp].items():
                e_ref = float(equivalent_width(reference.wavelength, t_ref, band))
                e_mod = float(equivalent_width(model.wavelength, t_mod, band))
                rows.append((comp, band_name, label, x, e_ref, e_mod, 100.0 * (e_mod / e_ref - 1)))
    return rows


def format_equivalent_width_table(rows) -> str:
    """Markdown table of :func:`compare_equivalent_widths` rows."""
    lines = [
        "| component | band (A) | node | sec z | EW MODTRAN (A) | EW model (A) | diff % |",
        "|---|---|---|---|---|---|---|",
    ]
    for comp, band, label, x, e_ref, e_mod, d in rows:
        lines.append(
            f"| {comp} | {band} | {label} | {x:.4g} | {e_ref:.3f} | {e_mod:.3f} | {d:+.2f} |"
        )
    return "\n".join(lines)
