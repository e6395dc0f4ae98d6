"""Simulation presets: sizes of the sky and of the observing campaign.

``tiny`` is for unit tests (seconds, a 0.25 deg mini-tract on 12 central detectors), ``tract``
is a realistic HSC tract (~110 visits, ~10^6 observations), ``large`` streams >= 10^7
observations to disk visit by visit. docs/simulation.md lists sizes and measured times.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    #: Tract radius written to skymap.yaml (deg); objects fill radius + margin_deg.
    tract_radius_deg: float
    margin_deg: float
    #: Number of central detectors simulated (None: the whole camera).
    n_detectors: int | None
    n_stars: int
    n_galaxies: int
    star_mag_range: tuple[float, float]  # i-band standard magnitude
    galaxy_mag_range: tuple[float, float]
    blend_fraction: float  # of stars with a close neighbour
    n_nights: int
    span_days: int  # nights drawn from this many consecutive days
    visits_per_night: int
    filters_per_night: int
    dither_deg: float  # dither offsets uniform in a disc of this radius
    nonphotometric_fraction: float
    max_secz: float
    #: Physical filters, observed in this rotation.
    physical_filters: tuple[str, ...] = ("HSC-G", "HSC-R2", "HSC-I2", "HSC-Z", "HSC-Y")
    #: Build fgcmLookupTable.fits with jaxfgcm.lut.
    build_lut: bool = True

    def replace(self, **changes) -> Preset:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", tract_radius_deg=0.25, margin_deg=0.05, n_detectors=12,
        n_stars=500, n_galaxies=120, star_mag_range=(16.0, 23.0), galaxy_mag_range=(19.0, 23.0),
        blend_fraction=0.02, n_nights=5, span_days=8, visits_per_night=10, filters_per_night=5,
        dither_deg=0.05, nonphotometric_fraction=0.2, max_secz=1.8,
    ),
    "tract": Preset(
        name="tract", tract_radius_deg=0.85, margin_deg=0.2, n_detectors=None,
        n_stars=11000, n_galaxies=3500, star_mag_range=(15.5, 24.0),
        galaxy_mag_range=(18.0, 24.0), blend_fraction=0.02, n_nights=7, span_days=40,
        visits_per_night=16, filters_per_night=3, dither_deg=0.4,
        nonphotometric_fraction=0.2, max_secz=2.0,
    ),
    "large": Preset(
        name="large", tract_radius_deg=0.85, margin_deg=0.2, n_detectors=None,
        n_stars=24000, n_galaxies=8000, star_mag_range=(15.5, 24.0),
        galaxy_mag_range=(18.0, 24.0), blend_fraction=0.02, n_nights=40, span_days=120,
        visits_per_night=25, filters_per_night=3, dither_deg=0.4,
        nonphotometric_fraction=0.2, max_secz=2.0,
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
