"""ProductInputs: the plain NumPy tables every product is made from.

:func:`collect` gathers them from a fit result (jaxfgcm.fit.FitResult), the star catalog
(jaxfgcm.stars.StarCatalog), the FitData and the LUT; the writers in this package only read
ProductInputs, so they can be tested with small hand-made inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ProductInputs:
    bands: tuple[str, ...]
    # ---- stars (n_star,) and (n_star, n_band) ----
    star_id: np.ndarray
    star_ra: np.ndarray
    star_dec: np.ndarray
    star_mag: np.ndarray
    star_mag_err: np.ndarray
    star_n_good: np.ndarray
    star_reserved: np.ndarray | None
    # ---- (visit, detector) rows (n_pair,) ----
    pair_visit: np.ndarray
    pair_detector: np.ndarray
    pair_zeropoint: np.ndarray  # mag, excluding the star flat, including 2.5 log10 exptime
    pair_zeropoint_err: np.ndarray
    pair_flag: np.ndarray
    pair_starflat: np.ndarray  # (n_pair, k, k) Chebyshev coefficients (mag), [y, x] order
    pair_bbox: np.ndarray  # (n_pair, 4) min_x, min_y, max_x, max_y: the Chebyshev domain
    pair_i0: np.ndarray
    pair_i10: np.ndarray
    pair_gray: np.ndarray
    pair_n_stars: np.ndarray | None
    # ---- visits (n_visit,) ----
    visit: np.ndarray
    visit_band: np.ndarray  # str
    visit_filter: np.ndarray  # str
    visit_mjd: np.ndarray
    visit_exptime: np.ndarray
    visit_atmosphere: dict[str, np.ndarray]  # pressure, pwv, o3, tau, alpha, airmass
    visit_gray: np.ndarray
    visit_flag: np.ndarray  # fgcm expFlag bits, 0 = photometric
    band_i10_std: np.ndarray  # (n_band,)
    # ---- cycles ----
    repeatability: np.ndarray  # (n_cycle, n_band) mag, reserved stars
    n_cycles: int = 0
    converged: bool | None = None
    cycle_log: list[dict] = field(default_factory=list)
    # ---- optional per-observation diagnostics (QA plots) ----
    obs: dict[str, np.ndarray] | None = None  # band, mag, residual, fx_mm, fy_mm, reserved
    fit_state: dict[str, np.ndarray] = field(default_factory=dict)
    fit_timings: dict[str, float] = field(default_factory=dict)
    #: Standard wavelength per band (Angstrom): SED slopes F' from colours use it.
    band_lambda_std: np.ndarray | None = None
    #: The fit's factor on the colour-based F' per band (FitParams.sed_scale).
    band_sed_slope_scale: np.ndarray | None = None

    def pair_band(self) -> np.ndarray:
        return self._visit_lookup(self.visit_band, self.pair_visit)

    def pair_filter(self) -> np.ndarray:
        return self._visit_lookup(self.visit_filter, self.pair_visit)

    def pair_mjd(self) -> np.ndarray:
        return self._visit_lookup(self.visit_mjd, self.pair_visit)

    def pair_exptime(self) -> np.ndarray:
        return self._visit_lookup(self.visit_exptime, self.pair_visit)

    def pair_i10_std(self) -> np.ndarray:
        b = np.array([self.bands.index(str(x)) for x in self.pair_band()], dtype=np.int64)
        return np.asarray(self.band_i10_std, dtype=np.float64)[b] if b.size else np.zeros(0)

    def _visit_lookup(self, values, visits):
        order = np.argsort(self.visit)
        pos = order[np.searchsorted(self.visit, visits, sorter=order)]
        return np.asarray(values)[pos]


def collect(result, catalog, lut, config, *, data, camera=None, qa=True) -> ProductInputs:
    """ProductInputs from a :class:`jaxfgcm.fit.FitResult`, the StarCatalog and the FitData.

    Zeropoints: the fit's ``zeropoint`` (``m_std = m_inst + zeropoint + delta_chrom``, m_inst the
    count-rate magnitude, star flat at the detector centre included) becomes the product's
    ``zeropoint`` for counts without the star flat: ``+ 2.5 log10(exptime) - star_flat_centre``;
    the star flat is given by its Chebyshev coefficients (docs/products.md).
    """
    bands = tuple(data.bands)
    n_exp, n_det = data.n_exp, data.n_det
    det_ids = np.asarray(camera.ids) if camera is not None else np.arange(n_det)
    visits = catalog.visits
    vrow = _rows_of(np.asarray(visits["visit"]), np.asarray(result.visit), "visit")
    band = np.asarray(visits["band"]).astype(str)[vrow]
    pfilter = np.asarray(visits["physical_filter"]).astype(str)[vrow]
    mjd = np.asarray(visits["mjd"], dtype=np.float64)[vrow]
    exptime = np.asarray(visits["exptime"], dtype=np.float64)[vrow]

    # ---- (exposure, detector) rows, exposure-major as the fit's (n_exp, n_det) arrays ----
    pair_exp = np.repeat(np.arange(n_exp), n_det)
    pair_det = np.tile(np.arange(n_det), n_exp)
    zp_fit = np.asarray(result.zeropoint, dtype=np.float64).ravel()
    flat_c = np.asarray(result.star_flat_centre, dtype=np.float64).ravel()
    zeropoint = zp_fit - flat_c + 2.5 * np.log10(exptime[pair_exp])
    k = data.star_flat_order + 1
    group = ((np.asarray(data.exp_epoch)[pair_exp] * data.n_filters
              + np.asarray(data.exp_filter)[pair_exp]) * n_det + pair_det)
    # The fit's coefficient c multiplies T_i(x~) T_j(y~) at index i * k + j; the product uses
    # afw's [y, x] layout, hence the transpose.
    coeffs = np.asarray(result.params.star_flat, dtype=np.float64)[group].reshape(-1, k, k)
    coeffs = np.transpose(coeffs, (0, 2, 1))
    nx = np.asarray(camera.nx, dtype=np.float64) if camera is not None else np.ones(n_det)
    ny = np.asarray(camera.ny, dtype=np.float64) if camera is not None else np.ones(n_det)
    bbox = np.stack([np.zeros(n_det), np.zeros(n_det), nx, ny], axis=1)[pair_det]
    ccd_gray = np.asarray(result.ccd_gray, dtype=np.float64)
    gray = np.where(np.isfinite(ccd_gray), ccd_gray,
                    np.asarray(result.exp_gray, dtype=np.float64)[:, None])
    zp_gray = getattr(result, "zeropoint_gray", None)
    if zp_gray is not None:  # what the zeropoint includes, where it has one
        zp_gray = np.asarray(zp_gray, dtype=np.float64)
        gray = np.where(np.isfinite(zp_gray), zp_gray, gray)
    gray = gray.ravel()
    valid = np.asarray(data.obs_valid)
    obs_pair = np.asarray(data.obs_pair)[valid]
    n_stars_pair = np.bincount(obs_pair, minlength=n_exp * n_det)

    atm = result.atmosphere
    visit_atm = {"pressure": atm["pressure"], "pwv": atm["pwv"], "o3": atm["o3"],
                 "tau": atm["tau"], "alpha": atm["alpha"], "airmass": atm["secz"]}
    fit_state = {name: np.asarray(getattr(result.params, name))
                 for name in _param_names(result.params)}
    fit_state["sigma_fgcm"] = np.asarray(result.sigma_fgcm)
    fit_state["photometric_cuts"] = np.asarray(result.photometric_cuts)
    fit_state["high_cuts"] = np.asarray(result.high_cuts)

    star_id = np.asarray(catalog.stars["star_id"])
    cycles = list(result.cycles)
    n_cycles = sum(1 for c in cycles if not c.get("cleanup"))
    inputs = ProductInputs(
        bands=bands,
        star_id=star_id,
        star_ra=np.asarray(catalog.stars["ra"]),
        star_dec=np.asarray(catalog.stars["dec"]),
        star_mag=np.asarray(result.star_mag),
        star_mag_err=np.asarray(result.star_mag_err),
        star_n_good=np.asarray(result.star_n_good),
        star_reserved=np.asarray(result.star_reserved),
        pair_visit=np.asarray(result.visit)[pair_exp],
        pair_detector=det_ids[pair_det],
        pair_zeropoint=zeropoint,
        pair_zeropoint_err=np.asarray(result.zeropoint_err, dtype=np.float64).ravel(),
        pair_flag=np.asarray(result.zeropoint_flag).ravel(),
        pair_starflat=coeffs,
        pair_bbox=bbox,
        pair_i0=np.asarray(result.i0, dtype=np.float64).ravel(),
        pair_i10=np.asarray(result.i10, dtype=np.float64).ravel(),
        pair_gray=gray,
        pair_n_stars=n_stars_pair,
        visit=np.asarray(result.visit),
        visit_band=band,
        visit_filter=pfilter,
        visit_mjd=mjd,
        visit_exptime=exptime,
        visit_atmosphere={k2: np.asarray(v, dtype=np.float64) for k2, v in visit_atm.items()},
        visit_gray=np.asarray(result.exp_gray, dtype=np.float64),
        visit_flag=np.asarray(result.exp_flags),
        band_i10_std=np.asarray(data.band_i10_std, dtype=np.float64),
        band_lambda_std=np.asarray(data.band_lambda_std, dtype=np.float64),
        band_sed_slope_scale=np.asarray(result.params.sed_scale, dtype=np.float64),
        repeatability=np.asarray(result.repeatability, dtype=np.float64),
        n_cycles=n_cycles,
        converged=_converged(cycles, config),
        cycle_log=cycles,
        fit_state=fit_state,
        fit_timings={k2: v for k2, v in result.timings.items() if np.isscalar(v)},
    )
    if qa:
        inputs.obs = observation_residuals(result, catalog, lut, data, camera)
    return inputs


def observation_residuals(result, catalog, lut, data, camera) -> dict[str, np.ndarray]:
    """Per valid observation: band index, star magnitude, residual m_std - <m_std> (gray
    corrected, with the chromatic correction from the final star colours), reserved and
    photometric flags, focal-plane position (mm). For the QA plots."""
    import jax.numpy as jnp

    from jaxfgcm.fit.driver import _interpolator
    from jaxfgcm.fit.model import sed_slopes, standard_magnitudes_compiled

    sb_star, sb_band = np.asarray(data.sb_star), np.asarray(data.sb_band)
    sb_mean = np.asarray(result.star_mag)[sb_star, sb_band]
    has = np.isfinite(sb_mean)
    sed = sed_slopes(jnp.asarray(np.where(has, sb_mean, 0.0)), jnp.asarray(has), data)
    ccd_gray = np.asarray(result.ccd_gray, dtype=np.float64)
    gray = np.where(np.isfinite(ccd_gray), ccd_gray, np.asarray(result.exp_gray)[:, None])
    gray = np.nan_to_num(gray).ravel()
    m = np.asarray(standard_magnitudes_compiled(result.params, data, _interpolator(lut), sed,
                                                pair_gray=jnp.asarray(gray)))
    valid = np.asarray(data.obs_valid)
    star = np.asarray(data.obs_star)[valid]
    band = np.asarray(data.obs_band)[valid]
    exp = np.asarray(data.obs_exp)[valid]
    star_mag = np.asarray(result.star_mag)[star, band]
    out = {
        "band": band,
        "star_mag": star_mag,
        "residual": m[valid] - star_mag,
        "reserved": np.asarray(result.star_reserved)[star],
        "photometric": np.asarray(result.exp_flags)[exp] == 0,
    }
    if camera is not None:
        row = np.asarray(data.obs_order)[valid]
        obs = catalog.observations
        det = np.asarray(obs["detector"])[row]
        fx, fy = camera.focal_plane(det, np.asarray(obs["x"])[row], np.asarray(obs["y"])[row])
        out["fx_mm"], out["fy_mm"] = fx, fy
    return out


def _converged(cycles: list[dict], config) -> bool | None:
    """fgcm's test on the last two fit cycles (no band improved by the tolerance)."""
    reps = [c["repeatability"] for c in cycles if not c.get("cleanup")]
    if len(reps) < 2:
        return None
    tol = config.fit.convergence_tolerance
    prev, last = reps[-2], reps[-1]
    return bool(all(not (np.isfinite(prev[b]) and np.isfinite(last[b]))
                    or prev[b] - last[b] < tol for b in last))


def _param_names(params) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(params)]


def _rows_of(keys: np.ndarray, wanted: np.ndarray, name: str) -> np.ndarray:
    order = np.argsort(keys, kind="stable")
    pos = np.clip(np.searchsorted(keys, wanted, sorter=order), 0, max(keys.size - 1, 0))
    rows = order[pos]
    if keys.size == 0 or np.any(keys[rows] != wanted):
        raise ValueError(f"output: some fitted {name}s are not in the star catalog's visits")
    return rows
