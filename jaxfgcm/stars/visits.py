"""The visit catalog: which visits overlap the tract, and their visit-level quantities.

Visit-level values follow fgcmcal's ``_fillVisitCatalog`` (fgcm-reference §7.3): filter, MJD,
exposure time, boresight and pressure from the row of the reference detector (the first row
of the visit when that detector is absent), PSF FWHM and sky background as medians over the
visit's detectors.
"""

from __future__ import annotations

import numpy as np

from jaxfgcm.config import Config

#: sqrt(8 ln 2): Gaussian sigma -> FWHM.
SIGMA_TO_FWHM = np.sqrt(8.0 * np.log(2.0))


def field_radius_deg(camera) -> float:
    """Radius (deg) of the circle about the boresight that holds every science detector."""
    corners = camera.corners_mm()
    r_mm = float(np.hypot(corners[..., 0], corners[..., 1]).max())
    return r_mm * camera.plate_scale_arcsec_per_mm / 3600.0


def select_visits(
    visit_summary: dict[str, np.ndarray],
    source_visits: list[int],
    tract,
    camera,
    config: Config,
    margin_deg: float,
) -> tuple[np.ndarray, dict[str, int], dict[str, list[int]]]:
    """Visits to read: their field of view overlaps the tract, their filter is configured and
    they have a source table.

    Returns ``(visits, counts, skipped)``: the selected visit ids (sorted), counts per reason
    (each visit counted once, in the order below) and the skipped visit ids per reason.
    """
    visit = visit_summary["visit"]
    uniq, first = np.unique(visit, return_index=True)
    boresight_sep = tract.separation_deg(
        visit_summary["boresight_ra"][first], visit_summary["boresight_dec"][first]
    )
    reach = tract.radius_deg + field_radius_deg(camera) + margin_deg
    filters = visit_summary["physical_filter"][first]
    configured = {
        f for f, b in config.instrument.physical_filters.items() if b in config.instrument.bands
    }
    known_filter = np.array([f in configured for f in filters], dtype=bool)
    has_sources = np.isin(uniq, np.asarray(source_visits, dtype=np.int64))

    counts = {"in_visit_summary": int(uniq.size)}
    skipped: dict[str, list[int]] = {}
    keep = np.ones(uniq.size, dtype=bool)
    for name, passes in (
        ("outside_tract", boresight_sep <= reach),
        ("filter_not_configured", known_filter),
        ("no_source_table", has_sources),
    ):
        fails = keep & ~passes
        counts[name] = int(fails.sum())
        skipped[name] = uniq[fails].tolist()
        keep &= passes
    orphans = sorted({int(v) for v in source_visits} - set(uniq.tolist()))
    counts["source_table_without_summary"] = len(orphans)
    skipped["source_table_without_summary"] = orphans
    counts["selected"] = int(keep.sum())
    return uniq[keep], counts, skipped


def detector_psf_fwhm(
    visit_summary: dict[str, np.ndarray], visit: np.ndarray, detector: np.ndarray, config: Config
) -> np.ndarray:
    """PSF FWHM (arcsec) of each (visit, detector) pair given, from the visit summary's
    psfSigma * pixelScale * sqrt(8 ln 2) (``instrument.pixel_scale_arcsec`` where pixelScale is
    NaN); NaN where the summary has no such row or no PSF.

    The seeing varies across the field (optics, focus), so the aperture loss of a fixed aperture
    varies from detector to detector; fgcmcal carries the same per-detector quantity
    (psfFwhmDetector) for this reason.
    """
    vs = visit_summary
    scale = np.asarray(vs["pixelScale"], dtype=np.float64)
    scale = np.where(np.isfinite(scale), scale, config.instrument.pixel_scale_arcsec)
    fwhm = np.asarray(vs["psfSigma"], dtype=np.float64) * scale * SIGMA_TO_FWHM
    n_det_key = int(max(np.max(vs["detector"], initial=0), np.max(detector, initial=0))) + 1
    key = np.asarray(vs["visit"], np.int64) * n_det_key + np.asarray(vs["detector"], np.int64)
    order = np.argsort(key, kind="stable")
    want = np.asarray(visit, np.int64) * n_det_key + np.asarray(detector, np.int64)
    pos = np.clip(np.searchsorted(key[order], want), 0, max(key.size - 1, 0))
    out = np.full(want.size, np.nan)
    if key.size:
        hit = key[order][pos] == want
        out[hit] = fwhm[order][pos][hit]
    out[~(out > 0)] = np.nan
    return out



def visit_detector_table(
    visit_summary: dict[str, np.ndarray], visits: np.ndarray, detectors: np.ndarray,
    config: Config,
) -> dict[str, np.ndarray]:
    """Per (visit, detector) quantities for every science detector of ``visits`` that the
    visit summary has a row for, sorted by visit then detector: ``psf_fwhm`` (arcsec, as
    `detector_psf_fwhm`; NaN where the summary has no PSF).

    Kept for every detector, not only those with stars: a detector without a catalog star in
    a visit still gets a zeropoint, and its aperture correction needs its own seeing (the
    visit's median was off by up to 0.06" at the field edge on the simulator's tract preset,
    1-7 mmag of aperture loss).
    """
    vs = visit_summary
    v = np.asarray(vs["visit"], np.int64)
    d = np.asarray(vs["detector"], np.int64)
    rows = np.flatnonzero(np.isin(v, np.asarray(visits, np.int64))
                          & np.isin(d, np.asarray(detectors, np.int64)))
    rows = rows[np.lexsort((d[rows], v[rows]))]
    key = v[rows] * (int(d.max(initial=0)) + 1) + d[rows]
    rows = rows[np.concatenate([[True], np.diff(key) != 0])] if rows.size else rows
    return {
        "visit": v[rows],
        "detector": d[rows].astype(np.int32),
        "psf_fwhm": detector_psf_fwhm(vs, v[rows], d[rows], config).astype(np.float32),
    }


def visit_table(
    visit_summary: dict[str, np.ndarray], visits: np.ndarray, config: Config
) -> dict[str, np.ndarray]:
    """Visit-level columns for ``visits`` (sorted ids present in the visit summary).

    ``pressure`` is ``air_pressure / 100`` (Pa -> mbar) and stays NaN where the summary has no
    pressure (never silently replaced by a standard value). ``psf_fwhm`` (arcsec) is the median
    over detectors of psfSigma * pixelScale * sqrt(8 ln 2), with ``instrument.pixel_scale_arcsec``
    where pixelScale is NaN; ``sky_background`` the median of the positive skyBg values.
    """
    vs = visit_summary
    rows = np.flatnonzero(np.isin(vs["visit"], visits))
    v = vs["visit"][rows]
    # visit_summary is sorted by (visit, detector): each visit's rows are contiguous.
    starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]]) if v.size else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], v.size]
    ref = starts.copy()
    det = vs["detector"][rows]
    for k, (s, e) in enumerate(zip(starts, ends)):
        hit = np.flatnonzero(det[s:e] == config.stars.reference_detector)
        if hit.size:
            ref[k] = s + hit[0]
    ref_rows = rows[ref]

    scale = vs["pixelScale"][rows]
    scale = np.where(np.isfinite(scale), scale, config.instrument.pixel_scale_arcsec)
    fwhm = vs["psfSigma"][rows] * scale * SIGMA_TO_FWHM
    sky = vs["skyBg"][rows]
    psf_fwhm = np.full(starts.size, np.nan)
    sky_background = np.full(starts.size, np.nan)
    for k, (s, e) in enumerate(zip(starts, ends)):
        f = fwhm[s:e]
        f = f[np.isfinite(f)]
        if f.size:
            psf_fwhm[k] = np.median(f)
        b = sky[s:e]
        b = b[np.isfinite(b) & (b > 0)]
        if b.size:
            sky_background[k] = np.median(b)

    return {
        "visit": v[starts].astype(np.int64),
        "physical_filter": vs["physical_filter"][ref_rows].astype(str),
        "band": vs["band"][ref_rows].astype(str),
        "mjd": vs["mjd"][ref_rows].astype(np.float64),
        "exptime": vs["exptime"][ref_rows].astype(np.float64),
        "telra": vs["boresight_ra"][ref_rows].astype(np.float64),
        "teldec": vs["boresight_dec"][ref_rows].astype(np.float64),
        "telha": vs["boresight_hour_angle"][ref_rows].astype(np.float64),
        "telrot": vs["boresight_rot_angle"][ref_rows].astype(np.float64),
        "pressure": vs["air_pressure"][ref_rows].astype(np.float64) / 100.0,
        "psf_fwhm": psf_fwhm,
        "sky_background": sky_background,
    }
