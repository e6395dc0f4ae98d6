"""Instrument effects the look-up table does not know: gray in wavelength, smooth in space/time.

All terms are magnitudes, positive = fainter (a loss of throughput):

* star flat (illumination error of the dome flat): per physical filter, a low-order polynomial
  in focal-plane coordinates, ``c_r2 (r/R)^2 + c_x fx/R + c_y fy/R + c_xy fx fy/R^2`` with
  R = 250 mm; coefficients ~ N(0, 6 mmag) give 1-2 % peak to peak across the field;
* per-detector throughput offsets: N(0, 8 mmag) common to all filters (QE/gain calibration)
  plus N(0, 2 mmag) per (filter, detector);
* mirror throughput decline (dust on the primary): ``decline_mmag_per_day`` x days since the
  first night (default 0.5 mmag/day), the same in every band.

Detector constants (HSC, Miyazaki et al. 2018): gain 3.0 e-/ADU, read noise 4.5 e-, full well
150 000 e-. Collecting area: the 8.2 m primary, pi (410 cm)^2, as fgcm's zptABNoThroughput uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

H_ERG_S = 6.62607015e-27
#: Geometric area of Subaru's 8.2 m primary (cm^2).
COLLECTING_AREA_CM2 = np.pi * 410.0**2
GAIN_E_PER_ADU = 3.0
READ_NOISE_E = 4.5
FULL_WELL_E = 150_000.0
#: Focal-plane scale of the star-flat polynomial (mm).
STAR_FLAT_RADIUS_MM = 250.0


def counts_per_fnu_unit() -> float:
    """ADU per second per (erg/s/cm^2/Hz) per unit of int S(lambda) dlambda/lambda: A / (h g).

    Photon rate = A int f_nu S dlambda / (h lambda) (f_nu / (h nu) photons per unit frequency).
    """
    return COLLECTING_AREA_CM2 / (H_ERG_S * GAIN_E_PER_ADU)


def zpt_ab_no_throughput() -> float:
    """m_AB = -2.5 log10(ADU/s) + this + 2.5 log10(I0) for a flat-f_nu source (fgcm's term)."""
    return 2.5 * np.log10(counts_per_fnu_unit()) - 48.6


@dataclass(frozen=True)
class InstrumentModel:
    """The gray instrument terms; arrays indexed by the camera's detector order."""

    physical_filters: tuple[str, ...]
    detector_ids: np.ndarray
    detector_offset: np.ndarray  # (n_filter, n_det) mag
    star_flat_coeffs: np.ndarray  # (n_filter, 4): c_r2, c_x, c_y, c_xy (mag)
    mirror_mjd0: float
    decline_mag_per_day: float

    def filter_index(self, physical_filter: str) -> int:
        return self.physical_filters.index(str(physical_filter))

    def star_flat(self, filter_index: int, fx_mm, fy_mm) -> np.ndarray:
        """Star-flat error (mag) at focal-plane positions."""
        c = self.star_flat_coeffs[filter_index]
        u = np.asarray(fx_mm) / STAR_FLAT_RADIUS_MM
        v = np.asarray(fy_mm) / STAR_FLAT_RADIUS_MM
        return c[0] * (u * u + v * v) + c[1] * u + c[2] * v + c[3] * u * v

    def mirror(self, mjd) -> np.ndarray:
        """Mirror throughput loss (mag) at ``mjd``."""
        return self.decline_mag_per_day * (np.asarray(mjd, dtype=np.float64) - self.mirror_mjd0)

    def loss(self, filter_index: int, det_index, fx_mm, fy_mm, mjd) -> np.ndarray:
        """Total instrument loss (mag): detector offset + star flat + mirror."""
        return (self.detector_offset[filter_index, det_index]
                + self.star_flat(filter_index, fx_mm, fy_mm) + self.mirror(mjd))


def make_instrument(rng: np.random.Generator, physical_filters, detector_ids, mirror_mjd0,
                    decline_mmag_per_day: float = 0.5, star_flat_mmag: float = 6.0,
                    detector_mmag: float = 8.0, filter_detector_mmag: float = 2.0
                    ) -> InstrumentModel:
    n_f, n_d = len(physical_filters), len(detector_ids)
    common = rng.normal(0.0, detector_mmag / 1000.0, n_d)
    offsets = common[None, :] + rng.normal(0.0, filter_detector_mmag / 1000.0, (n_f, n_d))
    coeffs = rng.normal(0.0, star_flat_mmag / 1000.0, (n_f, 4))
    return InstrumentModel(tuple(physical_filters), np.asarray(detector_ids), offsets, coeffs,
                           float(mirror_mjd0), decline_mmag_per_day / 1000.0)
