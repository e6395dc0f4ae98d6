"""Source selection: which rows of a sourceTable_visit are usable calibration observations.

The cuts follow fgcmcal's FgcmBuildStarsTable defaults (ScienceSourceSelectorTask: no bad flag,
unresolved, isolated, S/N window, finite coordinates; positive background-corrected flux), each
switchable in ``config.stars``. They are applied in the fixed order of `SOURCE_CUTS`, and each
rejected source is counted under the *first* cut it fails, so the counts of one visit add up to
the rows read (docs/stars.md lists every cut).
"""

from __future__ import annotations

import numpy as np

from jaxfgcm.config import StarsConfig
from jaxfgcm.stars.photometry import corrected_flux

#: Source cuts in the order they are applied (names used in the cut summary).
SOURCE_CUTS = (
    "detector_not_science",  # detector not a science detector of the camera
    "nonfinite_position",  # ra or dec not finite
    "bad_flag",  # any of config.stars.bad_flags set
    "sky_source",  # a sky (blank-sky) source
    "deblended",  # a deblended parent (nChild > 0) or a child (parentSourceId != 0)
    "not_point_source",  # extendedness >= max_extendedness, or extendedness NaN
    "bad_flux",  # flux, its error or the background-corrected flux not finite and positive
    "snr_out_of_range",  # S/N = flux / fluxErr outside [min_snr, max_snr]
)


def source_columns(config: StarsConfig) -> list[str]:
    """The sourceTable_visit columns that the stars stage reads (nothing else is read)."""
    inner, outer = config.inst_flux_field, config.outer_flux_field
    cols = [
        "sourceId", "detector", "ra", "dec", "x", "y",
        f"{inner}_instFlux", f"{inner}_instFluxErr", f"{outer}_instFlux",
    ]
    if config.subtract_local_background:
        cols.append("localBackground_instFlux")
    cols += list(config.bad_flags)
    if config.sky_source_column:
        cols.append(config.sky_source_column)
    if config.require_isolated:
        cols += ["parentSourceId", "deblend_nChild"]
    if config.max_extendedness < np.inf:
        cols.append("extendedness")
    return list(dict.fromkeys(cols))


def select_sources(
    table: dict[str, np.ndarray], config: StarsConfig, science_detectors: np.ndarray
) -> tuple[np.ndarray, dict[str, int]]:
    """Apply the source cuts to one visit's table.

    Returns ``(keep, removed)``: a boolean mask of the rows kept and, per cut name of
    `SOURCE_CUTS`, how many rows that cut removed (first failing cut only).
    """
    n = table["ra"].size
    keep = np.ones(n, dtype=bool)
    removed: dict[str, int] = {}

    def apply(name: str, passes: np.ndarray | None) -> None:
        nonlocal keep
        if passes is None:  # cut switched off
            removed[name] = 0
            return
        fails = keep & ~passes
        removed[name] = int(fails.sum())
        keep &= passes

    apply("detector_not_science", np.isin(table["detector"], science_detectors))
    apply("nonfinite_position", np.isfinite(table["ra"]) & np.isfinite(table["dec"]))
    if config.bad_flags:
        any_bad = np.zeros(n, dtype=bool)
        for flag in config.bad_flags:
            any_bad |= table[flag]
        apply("bad_flag", ~any_bad)
    else:
        apply("bad_flag", None)
    apply("sky_source", ~table[config.sky_source_column] if config.sky_source_column else None)
    apply(
        "deblended",
        (table["parentSourceId"] == 0) & (table["deblend_nChild"] == 0)
        if config.require_isolated
        else None,
    )
    # NaN extendedness compares False, so an unmeasured source is not taken as point-like.
    apply(
        "not_point_source",
        table["extendedness"] < config.max_extendedness
        if config.max_extendedness < np.inf
        else None,
    )
    flux = table[f"{config.inst_flux_field}_instFlux"]
    err = table[f"{config.inst_flux_field}_instFluxErr"]
    fcorr = corrected_flux(flux, table.get("localBackground_instFlux"), config)
    with np.errstate(invalid="ignore"):
        good_flux = (
            np.isfinite(flux) & (flux > 0) & np.isfinite(err) & (err > 0)
            & np.isfinite(fcorr) & (fcorr > 0)
        )
        # fgcmcal's S/N is on the raw aperture flux (ScienceSourceSelector signalToNoise).
        snr = flux / err
    apply("bad_flux", good_flux)
    apply("snr_out_of_range", (snr >= config.min_snr) & (snr <= config.max_snr))
    return keep, removed
