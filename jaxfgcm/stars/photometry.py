"""Instrumental magnitudes of selected sources (fgcmcal fgcmMakeAllStarObservations, ref. §1.1).

- ``F_corr = F - pi r^2 B`` with B = localBackground_instFlux (counts/px) and r the calibration
  aperture radius, when ``subtract_local_background`` (HSC: true);
- ``mag = -2.5 log10(F_corr / exptime)``: a count-*rate* magnitude;
- ``mag_err = (2.5 / ln 10) sigma_F / F``: fgcmcal's instMagErr, on the raw aperture flux;
- ``delta_aper = m(inner aperture) - m(outer aperture)`` per observation (raw fluxes), NaN where
  either flux is not positive; the visit table carries its per-visit median.
"""

from __future__ import annotations

import numpy as np

from jaxfgcm.config import StarsConfig

#: 2.5 / ln(10): d(mag) / d(ln flux).
MAG_PER_LN_FLUX = 2.5 / np.log(10.0)


def corrected_flux(flux: np.ndarray, local_background: np.ndarray | None, config: StarsConfig):
    """Aperture flux minus the residual local background in the aperture (counts)."""
    if not config.subtract_local_background:
        return flux
    area = np.pi * config.aperture_radius_px**2
    return flux - area * local_background


def instrumental_magnitudes(
    table: dict[str, np.ndarray], exptime: float, config: StarsConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mag, mag_err, delta_aper)`` of the rows of ``table`` (already selected: flux > 0).

    mag is float64: sums over hundreds of observations must stay far below 0.1 mmag, and a
    star's mean magnitude is fitted in float64. mag_err and delta_aper are float32 (errors and
    a ~0.1 mag aperture ratio need 1e-7 relative precision at most).
    """
    flux = table[f"{config.inst_flux_field}_instFlux"]
    err = table[f"{config.inst_flux_field}_instFluxErr"]
    fcorr = corrected_flux(flux, table.get("localBackground_instFlux"), config)
    mag = -2.5 * np.log10(fcorr / exptime)
    mag_err = (MAG_PER_LN_FLUX * err / flux).astype(np.float32)
    outer = table[f"{config.outer_flux_field}_instFlux"]
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(
            (flux > 0) & (outer > 0) & np.isfinite(outer), -2.5 * np.log10(flux / outer), np.nan
        )
    return mag, mag_err, delta.astype(np.float32)
