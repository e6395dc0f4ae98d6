"""FitData: the observation, exposure and (exposure, detector) arrays of one fit, on the device.

Observations are sorted by star-band segment ("sb": one star in one band) so every star mean is a
sorted segment sum, and padded to a multiple of ``PAD`` so that tracts of similar size share one
compiled program (padding rows have ``obs_valid = False`` and weight zero).

Precision (measured in tests/test_fit_model.py::test_float32_matches_float64): per-observation
float arrays (``obs_mag``, errors, positions) may be float32 -- a 20 mag value is resolved to
2e-6 mag -- but every reduction over observations (star means, chi2, gray) accumulates in float64,
because a float32 sum over 1e6 terms loses ~1e-4 relative precision, which the line search of the
optimizer needs. Exposure-level arrays (times, airmass) are float64: they are small.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)  # float64 reductions and parameters (see above)

#: Observation arrays are padded to a multiple of this (compile once per size bucket).
PAD = 4096

#: Bit flags of an observation that make it unusable whatever the cycle does.
OBS_BAD_INPUT = 1


class FitDataError(ValueError):
    """Inputs to FitData are inconsistent (the message names the table and column)."""


def night_and_time(mjd: np.ndarray, longitude_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Observing night (integer, the local-noon-bounded day) and days since local midnight.

    Local mean solar time is UT + longitude/15 h, so ``mjd + lon/360`` starts each day at local
    midnight; nights change at local noon, i.e. where that quantity has fraction 0.5.
    """
    local = np.asarray(mjd, dtype=np.float64) + longitude_deg / 360.0
    night = np.floor(local + 0.5).astype(np.int64)
    return night, local - night


def airmass(ha_deg, dec_deg, latitude_deg):
    """sec(zenith distance) from hour angle and declination (fgcm-reference §1.3)."""
    ha, dec, lat = np.radians(ha_deg), np.radians(dec_deg), np.radians(latitude_deg)
    return 1.0 / (np.sin(dec) * np.sin(lat) + np.cos(dec) * np.cos(lat) * np.cos(ha))


def detector_centre_airmass(camera, telra, teldec, telha, telrot, latitude_deg) -> np.ndarray:
    """(n_visits, n_det) airmass at each detector centre, from the camera geometry and the
    boresight (degrees). The zeropoint is quoted there (as fgcm does with its CCD offsets);
    the mean airmass of a pair's stars differs from it by up to ~0.02 on tract-edge detectors
    that stars cover in part (0.006 RMS on the simulator's tract preset, ~1 mmag in g)."""
    out = np.empty((len(telra), len(camera.ids)))
    for v in range(len(telra)):
        ra, dec = camera.focal_plane_to_sky(camera.x_mm, camera.y_mm, telra[v], teldec[v],
                                            telrot[v])
        out[v] = airmass(telha[v] + telra[v] - ra, dec, latitude_deg)
    return out


def chebyshev_basis(xn: np.ndarray, yn: np.ndarray, order: int) -> np.ndarray:
    """T_i(x) T_j(y) for 0 <= i, j <= order, columns ordered i * (order + 1) + j.

    ``xn``, ``yn`` are positions scaled to [-1, 1] over the detector.
    """
    tx = np.polynomial.chebyshev.chebvander(xn, order)
    ty = np.polynomial.chebyshev.chebvander(yn, order)
    return (tx[:, :, None] * ty[:, None, :]).reshape(len(xn), (order + 1) ** 2)


def chebyshev_columns(xn: jax.Array, yn: jax.Array, order: int) -> list[jax.Array]:
    """The columns of :func:`chebyshev_basis` as a list of 1-D JAX arrays, computed on the fly
    with the same recurrence (T_{k+1} = 2 x T_k - T_{k-1}, as numpy's chebvander).

    The fit computes the basis in every pass instead of reading a stored (n_obs, n_coef) array:
    two positions are half the bytes of the order-1 basis and a quarter of order 2's.
    """
    def powers(u):
        t = [jnp.ones_like(u), u]
        for _ in range(order - 1):
            t.append(2 * u * t[-1] - t[-2])
        return t[:order + 1]

    tx, ty = powers(xn), powers(yn)
    return [tx[i] * ty[j] for i in range(order + 1) for j in range(order + 1)]


def chebyshev_centre(order: int) -> jax.Array:
    """The basis of :func:`chebyshev_columns` at the detector centre (x = y = 0), where the
    zeropoints are quoted."""
    zero = jnp.zeros(1, jnp.float64)
    return jnp.concatenate(chebyshev_columns(zero, zero, order))


class FitData(eqx.Module):
    """All arrays the fit reads. Build with :meth:`build` (from a StarCatalog) or
    :meth:`from_arrays` (plain arrays, for experiments and synthetic tests)."""

    # ---- observations (padded, sorted by star-band segment) ----
    obs_sb: jax.Array  # int32 star-band segment
    obs_star: jax.Array  # int32 star index
    obs_exp: jax.Array  # int32 exposure index
    obs_det: jax.Array  # int32 detector index (0..n_det-1)
    obs_mag: jax.Array  # instrumental count-rate magnitude
    obs_err: jax.Array  # instrumental magnitude error
    obs_dsecz: jax.Array  # secz(observation) - secz(exposure, detector centre)
    # x, y scaled to [-1, 1] over the detector (clipped): the star flat's Chebyshev variables
    obs_xn: jax.Array
    obs_yn: jax.Array
    obs_valid: jax.Array  # bool: real observation with finite inputs
    obs_order: jax.Array  # int64: row of the observation in the input table (-1 for padding)
    # Derived indices, stored (not recomputed) because every pass gathers with them:
    obs_band: jax.Array  # int32 band
    obs_pair: jax.Array  # int32 (exposure, detector) pair = exp * n_det + det
    obs_flat_group: jax.Array  # int32 star-flat group (epoch, filter, detector)
    # ---- star-band segments ----
    sb_star: jax.Array
    sb_band: jax.Array
    star_reserved: jax.Array  # bool per star, kept out of the fit
    # ---- exposures ----
    exp_visit: jax.Array  # int64 visit id
    exp_band: jax.Array
    exp_filter: jax.Array
    exp_night: jax.Array  # index into nights
    exp_dt_night: jax.Array  # days since local midnight of the exposure's night
    exp_wash: jax.Array
    exp_dt_wash: jax.Array  # days since the start of the wash interval
    exp_epoch: jax.Array
    exp_mjd: jax.Array
    exp_exptime: jax.Array
    exp_pressure: jax.Array
    exp_aper_group: jax.Array  # aperture-correction group: the band, or 0 if shared
    exp_secz: jax.Array  # boresight airmass
    # ---- (exposure, detector) pairs, dense: pair = exp * n_det + det ----
    pair_secz: jax.Array  # mean airmass of the pair's observations (boresight if none)
    #: airmass at the detector centre, where zeropoints are quoted (pair_secz when unknown)
    pair_secz_centre: jax.Array
    pair_seeing: jax.Array  # PSF FWHM of the pair minus its band median (arcsec; 0 if unknown)
    det_lut_slot: jax.Array  # LUT detector slot of each detector index
    det_fp_xy: jax.Array  # (n_det, 2) detector centres in the focal plane (mm; 0 if unknown)
    # LUT table index of each of ``filters``: the fit may use a subset of the LUT's filters
    # (--bands), so filter indices of the fit and of the LUT differ.
    filter_lut_index: jax.Array
    # ---- per filter and band constants from the LUT ----
    filter_band: jax.Array
    filter_is_std: jax.Array  # bool: the filter defines its band's standard passband
    band_i10_std: jax.Array  # I10 of the standard passband per band (Angstrom)
    band_lambda_std: jax.Array  # standard wavelength per band (Angstrom)
    # ---- static sizes and names ----
    n_obs: int = eqx.field(static=True)
    n_stars: int = eqx.field(static=True)
    n_sb: int = eqx.field(static=True)
    n_exp: int = eqx.field(static=True)
    n_det: int = eqx.field(static=True)
    n_nights: int = eqx.field(static=True)
    n_wash: int = eqx.field(static=True)
    n_epochs: int = eqx.field(static=True)
    star_flat_order: int = eqx.field(static=True)
    n_aper: int = eqx.field(static=True)
    bands: tuple[str, ...] = eqx.field(static=True)
    filters: tuple[str, ...] = eqx.field(static=True)
    fit_bands: tuple[bool, ...] = eqx.field(static=True)
    #: LUT ranges the atmosphere is clipped to: (pwv, o3, tau, alpha) as (min, max) pairs.
    atm_bounds: tuple[tuple[float, float], ...] = eqx.field(static=True)

    @property
    def n_bands(self) -> int:
        return len(self.bands)

    @property
    def n_filters(self) -> int:
        return len(self.filters)

    @property
    def n_pairs(self) -> int:
        return self.n_exp * self.n_det

    @property
    def n_coef(self) -> int:
        return (self.star_flat_order + 1) ** 2

    @property
    def obs_cheb(self) -> jax.Array:
        """(n_obs, n_coef) Chebyshev basis at each observation's x, y (computed on use from
        ``obs_xn``, ``obs_yn``; columns as :func:`chebyshev_basis`)."""
        return jnp.stack(chebyshev_columns(self.obs_xn, self.obs_yn, self.star_flat_order),
                         axis=1)

    @property
    def pair_flat_group(self) -> jax.Array:
        """Star-flat group (epoch, filter, detector) of every (exposure, detector) pair."""
        ef = self.exp_epoch * self.n_filters + self.exp_filter
        return (jnp.repeat(ef, self.n_det, total_repeat_length=self.n_pairs) * self.n_det
                + jnp.tile(jnp.arange(self.n_det, dtype=ef.dtype), self.n_exp))

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        *,
        star_index,
        visit,
        detector_index,
        mag,
        mag_err,
        x,
        y,
        star_ra,
        star_dec,
        visits: Mapping[str, np.ndarray],
        bands: Sequence[str],
        filters: Sequence[str],
        filter_band: Sequence[int],
        filter_is_std: Sequence[bool],
        band_i10_std,
        band_lambda_std,
        n_det: int,
        detector_shape,
        config,
        obs_dtype=np.float64,
        det_lut_slot=None,
        psf_fwhm=None,
        filter_lut_index=None,
        centre_secz=None,
        pair_psf_fwhm=None,
        detector_position=None,
    ) -> FitData:
        """Build from plain arrays.

        ``visits`` has per-visit columns ``visit, filter_index, mjd, exptime, telra, teldec,
        telha, pressure`` (degrees, mbar) and optionally ``psf_fwhm`` (arcsec), the seeing that
        drives the aperture correction; ``psf_fwhm`` per observation (arcsec, optional) is the
        seeing of its (visit, detector) and takes precedence over the visit's;
        ``pair_psf_fwhm`` (n_visits, n_det; visits-table order, NaN unknown) gives it for every
        (visit, detector), also those without observations, and takes precedence over both.
        ``detector_shape`` is (n_det, 2) pixels (nx, ny) used
        to scale x, y to [-1, 1] for the star-flat Chebyshev polynomials. ``det_lut_slot`` maps
        detector index -> LUT detector slot (default: the same index). A visit without a
        pressure gets the median of the others (with a warning), never a silent standard.
        ``centre_secz`` (n_visits, n_det; visits-table order) is the airmass at each detector
        centre, where the zeropoints are quoted (default: the mean airmass of the pair's stars).
        ``detector_position`` (n_det, 2) are the detector centres in the focal plane (mm), for
        the focal-plane gray fit.
        """
        fit_cfg, site = config.fit, config.site
        star_index = np.asarray(star_index, dtype=np.int64)
        n_obs_in = len(star_index)
        cols = {k: np.asarray(v) for k, v in visits.items()}
        for name in ("visit", "filter_index", "mjd", "exptime", "telra", "teldec", "telha",
                     "pressure"):
            if name not in cols:
                raise FitDataError(f"visits table: missing column '{name}'")
        for name, arr in (("visit", visit), ("detector_index", detector_index), ("mag", mag),
                          ("mag_err", mag_err), ("x", x), ("y", y)):
            if len(arr) != n_obs_in:
                raise FitDataError(f"observations: column '{name}' has {len(arr)} rows, "
                                   f"expected {n_obs_in}")
        pressure = cols["pressure"].astype(np.float64)
        bad_p = ~np.isfinite(pressure)
        if bad_p.any():
            fill = (float(np.median(pressure[~bad_p])) if (~bad_p).any()
                    else float(config.standard_atmosphere.pressure))
            warnings.warn(f"visits table: {int(bad_p.sum())} visits without a pressure get "
                          f"{fill:.1f} mbar (the median of the others, or the standard)",
                          stacklevel=2)
            cols["pressure"] = np.where(bad_p, fill, pressure)
        n_exp = len(cols["visit"])
        order = np.argsort(cols["visit"], kind="stable")
        pos = np.searchsorted(cols["visit"][order], visit)
        pos = np.clip(pos, 0, n_exp - 1)
        exp_index = order[pos]
        if not np.all(cols["visit"][exp_index] == visit):
            raise FitDataError("observations: some 'visit' values are not in the visits table")
        filt = cols["filter_index"].astype(np.int64)
        filter_band = np.asarray(filter_band, dtype=np.int64)
        exp_band = filter_band[filt]
        band_of_obs = exp_band[exp_index]

        # nights, wash intervals and epochs
        mjd = cols["mjd"].astype(np.float64)
        night_id, dt_night = night_and_time(mjd, site.longitude_deg)
        nights, exp_night = np.unique(night_id, return_inverse=True)
        wash_edges = np.sort(np.asarray(fit_cfg.wash_mjds, dtype=np.float64))
        wash_edges = wash_edges[(wash_edges > mjd.min()) & (wash_edges <= mjd.max())]
        exp_wash = np.searchsorted(wash_edges, mjd, side="right")
        wash_start = np.concatenate([[mjd.min()], wash_edges])
        epoch_edges = np.sort(np.asarray(fit_cfg.epoch_mjds, dtype=np.float64))
        epoch_edges = epoch_edges[(epoch_edges > mjd.min()) & (epoch_edges <= mjd.max())]
        exp_epoch = np.searchsorted(epoch_edges, mjd, side="right")

        # airmass per observation (hour angle of the star, fgcm-reference §1.3)
        ra_obs = np.asarray(star_ra, dtype=np.float64)[star_index]
        dec_obs = np.asarray(star_dec, dtype=np.float64)[star_index]
        ha_obs = cols["telha"][exp_index] + cols["telra"][exp_index] - ra_obs
        secz_obs = airmass(ha_obs, dec_obs, site.latitude_deg)
        exp_secz = airmass(cols["telha"], cols["teldec"], site.latitude_deg)
        det = np.asarray(detector_index, dtype=np.int64)
        pair = exp_index * n_det + det
        n_pairs = n_exp * n_det
        cnt = np.bincount(pair, minlength=n_pairs)
        pair_secz = np.bincount(pair, weights=secz_obs, minlength=n_pairs) / np.maximum(cnt, 1)
        pair_secz = np.where(cnt > 0, pair_secz, np.repeat(exp_secz, n_det))
        if centre_secz is None:
            pair_secz_centre = pair_secz
        else:
            pair_secz_centre = np.asarray(centre_secz, np.float64).reshape(-1)
            if pair_secz_centre.shape != (n_pairs,) or not np.all(np.isfinite(pair_secz_centre)):
                raise FitDataError(f"centre_secz: expected ({n_exp}, {n_det}) finite airmasses")
        dsecz = secz_obs - pair_secz[pair]
        exp_aper_group = (exp_band if fit_cfg.aperture_correction_per_band
                          else np.zeros_like(exp_band)).astype(np.int32)
        pair_seeing = _centred_seeing(
            _pair_fwhm(psf_fwhm, pair, n_pairs, cols.get("psf_fwhm"), n_det, pair_psf_fwhm),
            np.repeat(exp_aper_group, n_det))

        # star-band segments, observations sorted by them
        n_bands = len(bands)
        sb_key = star_index * n_bands + band_of_obs
        sb_keys, obs_sb = np.unique(sb_key, return_inverse=True)
        perm = np.argsort(obs_sb, kind="stable")
        n_obs = n_obs_in
        n_pad = max(PAD, math.ceil(n_obs / PAD) * PAD)

        def padded(a, fill, dtype):
            out = np.full(n_pad, fill, dtype=dtype)
            out[:n_obs] = np.asarray(a)[perm]
            return out

        shape = np.asarray(detector_shape, dtype=np.float64)
        xn = 2.0 * np.asarray(x, dtype=np.float64) / shape[det, 0] - 1.0
        yn = 2.0 * np.asarray(y, dtype=np.float64) / shape[det, 1] - 1.0
        order_sf = int(fit_cfg.star_flat_order)
        mag = np.asarray(mag, dtype=np.float64)
        err = np.asarray(mag_err, dtype=np.float64)
        # Observations beyond the LUT's airmass range are unusable (fgcm: BAD_AIRMASS).
        secz_ok = ((secz_obs >= config.lut.secz.min - 1e-6) & (secz_obs <= config.lut.secz.max))
        good = np.isfinite(mag) & np.isfinite(err) & (err > 0) & np.isfinite(secz_obs) & secz_ok
        valid = np.zeros(n_pad, dtype=bool)
        valid[:n_obs] = good[perm]

        n_stars = len(star_ra)
        rng = np.random.default_rng(fit_cfg.random_seed)
        reserved = rng.random(n_stars) < fit_cfg.reserve_fraction
        fit_band_mask = tuple(b in fit_cfg.fit_bands for b in bands)
        sb_last = len(sb_keys) - 1

        return cls(
            obs_sb=jnp.asarray(padded(obs_sb, sb_last, np.int32)),
            obs_star=jnp.asarray(padded(star_index, 0, np.int32)),
            obs_exp=jnp.asarray(padded(exp_index, 0, np.int32)),
            obs_det=jnp.asarray(padded(det, 0, np.int32)),
            obs_mag=jnp.asarray(padded(np.where(good, mag, 0.0), 0.0, obs_dtype)),
            obs_err=jnp.asarray(padded(np.where(good, err, 1.0), 1.0, obs_dtype)),
            obs_dsecz=jnp.asarray(padded(np.where(good, dsecz, 0.0), 0.0, obs_dtype)),
            obs_xn=jnp.asarray(padded(np.clip(xn, -1, 1), 0.0, obs_dtype)),
            obs_yn=jnp.asarray(padded(np.clip(yn, -1, 1), 0.0, obs_dtype)),
            obs_valid=jnp.asarray(valid),
            obs_order=jnp.asarray(padded(np.arange(n_obs), -1, np.int64)),
            obs_band=jnp.asarray(padded(band_of_obs, 0, np.int32)),
            obs_pair=jnp.asarray(padded(pair, 0, np.int32)),
            obs_flat_group=jnp.asarray(padded(
                (exp_epoch[exp_index] * len(filters) + filt[exp_index]) * n_det + det, 0,
                np.int32)),
            sb_star=jnp.asarray((sb_keys // n_bands).astype(np.int32)),
            sb_band=jnp.asarray((sb_keys % n_bands).astype(np.int32)),
            star_reserved=jnp.asarray(reserved),
            exp_visit=jnp.asarray(cols["visit"].astype(np.int64)),
            exp_band=jnp.asarray(exp_band.astype(np.int32)),
            exp_filter=jnp.asarray(filt.astype(np.int32)),
            exp_night=jnp.asarray(exp_night.astype(np.int32)),
            exp_dt_night=jnp.asarray(dt_night),
            exp_wash=jnp.asarray(exp_wash.astype(np.int32)),
            exp_dt_wash=jnp.asarray(mjd - wash_start[exp_wash]),
            exp_epoch=jnp.asarray(exp_epoch.astype(np.int32)),
            exp_mjd=jnp.asarray(mjd),
            exp_exptime=jnp.asarray(cols["exptime"].astype(np.float64)),
            exp_pressure=jnp.asarray(cols["pressure"].astype(np.float64)),
            exp_aper_group=jnp.asarray(exp_aper_group),
            exp_secz=jnp.asarray(exp_secz),
            pair_secz=jnp.asarray(pair_secz),
            pair_secz_centre=jnp.asarray(pair_secz_centre),
            pair_seeing=jnp.asarray(pair_seeing),
            det_lut_slot=jnp.asarray(np.arange(n_det) if det_lut_slot is None
                                     else np.asarray(det_lut_slot), dtype=jnp.int32),
            det_fp_xy=jnp.asarray(np.zeros((n_det, 2)) if detector_position is None
                                  else np.asarray(detector_position, np.float64).reshape(n_det, 2)),
            filter_lut_index=jnp.asarray(np.arange(len(filters)) if filter_lut_index is None
                                         else np.asarray(filter_lut_index), dtype=jnp.int32),
            filter_band=jnp.asarray(filter_band.astype(np.int32)),
            filter_is_std=jnp.asarray(np.asarray(filter_is_std, dtype=bool)),
            band_i10_std=jnp.asarray(np.asarray(band_i10_std, dtype=np.float64)),
            band_lambda_std=jnp.asarray(np.asarray(band_lambda_std, dtype=np.float64)),
            n_obs=n_obs,
            n_stars=n_stars,
            n_sb=len(sb_keys),
            n_exp=n_exp,
            n_det=int(n_det),
            n_nights=len(nights),
            n_wash=len(wash_edges) + 1,
            n_epochs=len(epoch_edges) + 1,
            star_flat_order=order_sf,
            n_aper=len(bands) if fit_cfg.aperture_correction_per_band else 1,
            bands=tuple(bands),
            filters=tuple(filters),
            fit_bands=fit_band_mask,
            atm_bounds=_atm_bounds(config.lut),
        )

    # ------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, catalog, lut, camera, config, obs_dtype=None) -> FitData:
        """From a :class:`jaxfgcm.stars.StarCatalog`, the LUT (for the standard passbands) and
        the camera (detector ids and sizes). ``obs_dtype``: of the per-observation float
        arrays (default ``config.fit.observation_dtype``)."""
        if obs_dtype is None:
            if config.fit.observation_dtype not in ("float32", "float64"):
                from jaxfgcm.config import ConfigError

                raise ConfigError(f"'fit.observation_dtype' must be float32 or float64, got "
                                  f"{config.fit.observation_dtype!r}")
            obs_dtype = np.dtype(config.fit.observation_dtype)
        stars, obs, visits = catalog.stars, catalog.observations, catalog.visits
        bands = tuple(config.instrument.bands)
        lut_filters = [str(f) for f in _attr(lut, "physical_filters")]
        filters = tuple(f for f in lut_filters if config.instrument.physical_filters.get(f) in bands)
        fidx = {f: i for i, f in enumerate(filters)}
        filter_band = [bands.index(config.instrument.physical_filters[f]) for f in filters]
        std = config.instrument.std_physical_filters
        filter_is_std = [std.get(config.instrument.physical_filters[f]) == f for f in filters]
        i10_std_f = np.asarray(_attr(lut, "i10_std"), dtype=np.float64)
        lam_std_f = np.asarray(_attr(lut, "lambda_std"), dtype=np.float64)
        band_i10 = np.zeros(len(bands))
        band_lam = np.zeros(len(bands))
        for b, band in enumerate(bands):
            f = std.get(band)
            if f in lut_filters:
                band_i10[b] = i10_std_f[lut_filters.index(f)]
                band_lam[b] = lam_std_f[lut_filters.index(f)]
        pf = np.asarray(_col(visits, "physical_filter", "visits")).astype(str)
        unknown = sorted(set(pf) - set(fidx))
        if unknown:
            raise FitDataError(f"visits table: physical filters {unknown} are not in the LUT "
                               "or not mapped to a configured band")
        det_ids = np.asarray(camera.ids)
        det_sorter = np.argsort(det_ids)
        det_obs = np.asarray(_col(obs, "detector", "observations"))
        dpos = np.clip(np.searchsorted(det_ids[det_sorter], det_obs), 0, len(det_ids) - 1)
        det_index = det_sorter[dpos]
        if not np.all(det_ids[det_index] == det_obs):
            raise FitDataError("observations: 'detector' values not in the camera")
        shape = np.stack([np.asarray(camera.nx, float) * np.ones(len(det_ids)),
                          np.asarray(camera.ny, float) * np.ones(len(det_ids))], axis=1)
        vis = {
            "visit": np.asarray(_col(visits, "visit", "visits")),
            "filter_index": np.array([fidx[f] for f in pf], dtype=np.int64),
            **{k: np.asarray(_col(visits, k, "visits"), dtype=np.float64)
               for k in ("mjd", "exptime", "telra", "teldec", "telha", "pressure")},
        }
        try:
            vis["psf_fwhm"] = np.asarray(_col(visits, "psf_fwhm", "visits"), np.float64)
        except FitDataError:
            pass  # optional: no aperture correction
        try:
            telrot = np.asarray(_col(visits, "telrot", "visits"), np.float64)
        except FitDataError:
            centre_secz = None  # no rotation: zeropoints at the stars' mean airmass
        else:
            centre_secz = detector_centre_airmass(camera, vis["telra"], vis["teldec"],
                                                  vis["telha"], telrot, config.site.latitude_deg)
        obs_fwhm = None
        if "psf_fwhm" in obs:  # per (visit, detector); catalogs before format 2 lack it
            obs_fwhm = np.asarray(obs["psf_fwhm"], np.float64)
        pair_fwhm = _visit_detector_grid(getattr(catalog, "visit_detectors", None),
                                         vis["visit"], det_ids, "psf_fwhm")
        return cls.from_arrays(
            star_index=_col(obs, "star_index", "observations"),
            visit=_col(obs, "visit", "observations"),
            detector_index=det_index,
            mag=_col(obs, "mag", "observations"),
            mag_err=_col(obs, "mag_err", "observations"),
            x=_col(obs, "x", "observations"),
            y=_col(obs, "y", "observations"),
            star_ra=_col(stars, "ra", "stars"),
            star_dec=_col(stars, "dec", "stars"),
            visits=vis,
            bands=bands,
            filters=filters,
            filter_band=filter_band,
            filter_is_std=filter_is_std,
            band_i10_std=band_i10,
            band_lambda_std=band_lam,
            n_det=len(det_ids),
            detector_shape=shape,
            config=config,
            obs_dtype=obs_dtype,
            det_lut_slot=_lut_slots(lut, det_ids),
            psf_fwhm=obs_fwhm,
            pair_psf_fwhm=pair_fwhm,
            detector_position=np.stack([np.asarray(camera.x_mm, np.float64),
                                        np.asarray(camera.y_mm, np.float64)], axis=1),
            centre_secz=centre_secz,
            filter_lut_index=[lut_filters.index(f) for f in filters],
        )

    def with_obs_dtype(self, dtype) -> FitData:
        """A copy whose per-observation float arrays have ``dtype`` (float32 or float64)."""
        return eqx.tree_at(
            lambda d: (d.obs_mag, d.obs_err, d.obs_dsecz, d.obs_xn, d.obs_yn),
            self,
            (self.obs_mag.astype(dtype), self.obs_err.astype(dtype),
             self.obs_dsecz.astype(dtype), self.obs_xn.astype(dtype), self.obs_yn.astype(dtype)),
        )


def _pair_fwhm(obs_fwhm, pair, n_pairs, visit_fwhm, n_det, pair_fwhm=None):
    """PSF FWHM per (exposure, detector) pair: ``pair_fwhm`` (the visit summary's, per pair)
    where given and finite, else the observations' value (one per pair), else the visit's;
    None if none is known."""
    out = None
    if visit_fwhm is not None:
        out = np.repeat(np.asarray(visit_fwhm, np.float64), n_det)
    if obs_fwhm is not None:
        f = np.asarray(obs_fwhm, np.float64)
        ok = np.isfinite(f) & (f > 0)
        cnt = np.bincount(pair[ok], minlength=n_pairs)
        mean = np.bincount(pair[ok], weights=f[ok], minlength=n_pairs) / np.maximum(cnt, 1)
        base = np.full(n_pairs, np.nan) if out is None else out
        out = np.where(cnt > 0, mean, base)
    if pair_fwhm is not None:
        f = np.asarray(pair_fwhm, np.float64).reshape(-1)
        if f.shape != (n_pairs,):
            raise FitDataError(f"pair_psf_fwhm: expected {n_pairs // n_det} x {n_det} values, "
                               f"got shape {np.shape(pair_fwhm)}")
        ok = np.isfinite(f) & (f > 0)
        base = np.full(n_pairs, np.nan) if out is None else out
        out = np.where(ok, f, base)
    return out


def _visit_detector_grid(table, visits, det_ids, column):
    """(n_visits, n_det) array of a per-(visit, detector) catalog column in the order of
    ``visits`` and ``det_ids`` (NaN where the table has no row); None without the table."""
    if table is None or column not in table or len(table[column]) == 0:
        return None
    visits = np.asarray(visits, np.int64)
    det_ids = np.asarray(det_ids, np.int64)
    tv = np.asarray(table["visit"], np.int64)
    td = np.asarray(table["detector"], np.int64)
    vo, do = np.argsort(visits), np.argsort(det_ids)
    vi = np.clip(np.searchsorted(visits[vo], tv), 0, len(visits) - 1)
    di = np.clip(np.searchsorted(det_ids[do], td), 0, len(det_ids) - 1)
    hit = (visits[vo][vi] == tv) & (det_ids[do][di] == td)
    out = np.full((len(visits), len(det_ids)), np.nan)
    out[vo[vi[hit]], do[di[hit]]] = np.asarray(table[column], np.float64)[hit]
    return out


def _centred_seeing(fwhm, group):
    """PSF FWHM (per visit, or per (exposure, detector) pair) minus the median of its aperture
    group (the pivot: all bands together, or its band with ``aperture_correction_per_band``);
    unknown -> 0.

    The aperture correction's seeing variable. fgcm uses the visit's delta-aperture by default;
    on the simulator's tract preset the PSF FWHM predicts the true aperture correction far
    better (correlation -0.98 vs -0.25, and a quadratic in FWHM leaves 0.13 mmag RMS). The
    seeing grows towards the field edge, so the aperture loss differs between detectors of one
    visit (1-19 mmag on the tract preset): the FWHM is taken per detector (fgcmcal's
    psfFwhmDetector) when the catalog has it. One pivot for all bands when they share A1, A2:
    a point source's aperture loss is one function of the FWHM whatever the band, while a
    shared quadratic about each band's own median is a different function in each band (its
    linear term moves by 2 A2 (median_b - median)): on the tract preset, seed 103 (g median
    1.10", i 0.75"), the true aperture corrections are left with 10.5 / 3.1 / 6.0 / 4.9 /
    2.3 mmag (g r i z y) about per-band pivots and 1.9 / 1.4 / 1.2 / 1.3 / 1.1 about one.
    """
    if fwhm is None:
        return np.zeros(len(group))
    d = np.asarray(fwhm, dtype=np.float64).copy()
    d[~np.isfinite(d) | (d <= 0)] = np.nan
    for b in np.unique(group):
        sel = group == b
        med = np.nanmedian(d[sel]) if np.isfinite(d[sel]).any() else 0.0
        d[sel] -= med
    return np.nan_to_num(d)


def _lut_slots(lut, det_ids):
    if hasattr(lut, "detector_index"):
        try:
            return np.asarray(lut.detector_index(det_ids))
        except KeyError as exc:
            raise FitDataError(f"look-up table: camera detectors missing from the LUT ({exc})")
    return np.arange(len(det_ids))


def _atm_bounds(lut_cfg):
    from .params import ALPHA_RANGE

    return (
        (float(lut_cfg.pwv.min), float(lut_cfg.pwv.max)),
        (float(lut_cfg.o3.min), float(lut_cfg.o3.max)),
        (float(lut_cfg.tau.min), float(lut_cfg.tau.max)),
        (max(ALPHA_RANGE[0], float(lut_cfg.alpha.min)), min(ALPHA_RANGE[1], float(lut_cfg.alpha.max))),
    )


def _col(table, name, table_name):
    try:
        return table[name]
    except (KeyError, TypeError, IndexError):
        pass
    if hasattr(table, name):
        return getattr(table, name)
    raise FitDataError(f"{table_name} table: missing column '{name}'")


def _attr(obj, name):
    for n in (name, name.upper(), name.replace("_std", "Std")):
        if hasattr(obj, n):
            return getattr(obj, n)
    raise FitDataError(f"look-up table: missing '{name}'")
