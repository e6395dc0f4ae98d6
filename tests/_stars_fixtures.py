"""A small synthetic repository with known truth, for tests/test_stars.py and the benchmark.

Stars (and galaxies) are placed on the sky around a tract and observed by a 2x2-detector camera
in dithered visits; every source row is labelled with its *kind* (good, or exactly one defect),
its true star id and its true instrumental magnitude, so the stars stage can be checked
against truth: which cut removes which source, star identity, magnitudes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jaxfgcm.camera import Camera, write_camera
from jaxfgcm.repo import (
    SOURCE_COLUMNS,
    TractInfo,
    write_repo_yaml,
    write_skymap,
    write_source_table,
    write_visit_summary,
)

TRACT = 1
TRACT_RA, TRACT_DEC = 150.0, 2.0
BAD_FLAGS = (
    "pixelFlags_edge", "pixelFlags_interpolatedCenter", "pixelFlags_saturatedCenter",
    "pixelFlags_crCenter", "pixelFlags_bad", "pixelFlags_interpolated", "pixelFlags_saturated",
    "centroid_flag", "apFlux_12_0_flag", "localBackground_flag",
)
FILTERS = {"g": "HSC-G", "r": "HSC-R2", "i": "HSC-I2", "z": "HSC-Z", "y": "HSC-Y"}
ZP_INST = 27.0  # 1 count/s at this magnitude
SKY_VAR = 100.0  # counts^2 per pixel
AREA12 = np.pi * 12.0**2
NON_SCIENCE_DETECTOR = 99


def small_camera(n_pix: int = 2000) -> Camera:
    """Four 2000x2000-pixel detectors (0.168"/px) in a 2x2 mosaic, ~11' across."""
    half = n_pix * 0.015 / 2 + 0.5
    return Camera(
        ids=np.arange(4), names=np.array(["A", "B", "C", "D"]),
        x_mm=np.array([-half, half, -half, half]), y_mm=np.array([-half, -half, half, half]),
        yaw_deg=np.zeros(4), nx=np.full(4, n_pix), ny=np.full(4, n_pix),
        pixel_size_mm=np.full(4, 0.015), plate_scale_arcsec_per_mm=11.2,
    )


@dataclass
class SyntheticTruth:
    """Per source row (all visits concatenated): kind, star id (-1 if none), true inst. mag."""

    source_id: np.ndarray
    kind: np.ndarray
    star: np.ndarray
    true_mag: np.ndarray
    visit: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    star_ra: np.ndarray  # per true star
    star_dec: np.ndarray
    star_moving: np.ndarray  # per true star: high proper motion
    visits: dict = field(default_factory=dict)  # per visit truth (delta_aper, exptime, ...)
    empty_visit: int = -1
    far_visit: int = -1
    nb_visit: int = -1


def _offset(ra, dec, dx_arcsec, dy_arcsec):
    """Small tangent-plane offsets (arcsec east, north) -> (ra, dec)."""
    dec2 = dec + dy_arcsec / 3600.0
    ra2 = ra + dx_arcsec / 3600.0 / np.cos(np.radians(dec))
    return ra2, dec2


def make_synthetic_repo(
    path,
    *,
    n_stars: int = 600,
    n_galaxies: int = 150,
    visits_per_band: int = 3,
    field_radius_arcsec: float = 330.0,
    tract_radius_deg: float = 0.06,
    jitter_arcsec: float = 0.05,
    seed: int = 7,
    defects: bool = True,
    n_pix: int = 2000,
) -> SyntheticTruth:
    """Write a repository at ``path`` and return its truth."""
    rng = np.random.default_rng(seed)
    camera = small_camera(n_pix)
    write_camera(camera, path / "camera.parquet")
    write_repo_yaml(
        path, instrument="HSC",
        site={"name": "Maunakea", "latitude_deg": 19.8256, "longitude_deg": -155.4761,
              "elevation_m": 4139.0},
        physical_filters={**{f: b for b, f in FILTERS.items()}, "NB0921": "N921"},
    )
    write_skymap(path, [TractInfo(TRACT, TRACT_RA, TRACT_DEC, tract_radius_deg),
                        TractInfo(2, 10.0, -30.0, 0.5)])

    # True stars: uniform in a disc; a few designed configurations appended.
    r = field_radius_arcsec * np.sqrt(rng.random(n_stars))
    phi = rng.uniform(0, 2 * np.pi, n_stars)
    sx, sy = r * np.cos(phi), r * np.sin(phi)
    moving = np.zeros(n_stars, bool)
    if defects:
        # Close pairs (0.6" and 1.5": not isolated) and a resolvable 3" pair, well inside.
        extra = [(30.0, 30.0), (30.6, 30.0), (-40.0, 20.0), (-38.5, 20.0), (50.0, -50.0),
                 (53.0, -50.0), (-60.0, -60.0)]
        sx = np.concatenate([sx, [e[0] for e in extra]])
        sy = np.concatenate([sy, [e[1] for e in extra]])
        moving = np.concatenate([moving, [False] * 6 + [True]])  # last: 0.5"/visit mover
    n_all = sx.size
    star_ra, star_dec = _offset(TRACT_RA, TRACT_DEC, sx, sy)
    star_mag = {b: rng.uniform(17.0, 21.5, n_all) for b in FILTERS}
    gx = field_radius_arcsec * np.sqrt(rng.random(n_galaxies)) * np.cos(
        g_phi := rng.uniform(0, 2 * np.pi, n_galaxies))
    gy = field_radius_arcsec * np.sqrt(rng.random(n_galaxies)) * np.sin(g_phi)
    gal_mag = rng.uniform(18.0, 21.0, n_galaxies)

    bands = list(FILTERS)
    plan = [(b, FILTERS[b]) for b in bands for _ in range(visits_per_band)]
    if defects:
        plan += [("N921", "NB0921"), ("i", FILTERS["i"]), ("r", FILTERS["r"])]
    vs_rows: dict[str, list] = {k: [] for k in (
        "visit", "detector", "physical_filter", "band", "mjd", "exptime", "boresight_ra",
        "boresight_dec", "boresight_rot_angle", "boresight_hour_angle", "zenith_distance",
        "parallactic_angle", "air_pressure", "psfSigma", "pixelScale", "skyBg", "bbox_min_x",
        "bbox_min_y", "bbox_max_x", "bbox_max_y")}
    truth_rows: dict[str, list] = {k: [] for k in ("source_id", "kind", "star", "true_mag",
                                                   "visit", "ra", "dec")}
    visit_truth = {}
    next_id = 1
    empty_visit = far_visit = nb_visit = -1
    for k, (band, pf) in enumerate(plan):
        visit = 1000 + k
        exptime = float([30.0, 60.0, 90.0][k % 3])
        dra, ddec = rng.uniform(-60, 60, 2)
        if defects and k == len(plan) - 2:
            # Far from the tract: must not be selected.
            b_ra, b_dec = TRACT_RA + 3.0, TRACT_DEC
            far_visit = visit
        else:
            b_ra, b_dec = _offset(TRACT_RA, TRACT_DEC, dra, ddec)
        if defects and k == len(plan) - 1:
            empty_visit = visit
        if band == "N921":
            nb_visit = visit
        rot = float(rng.uniform(0, 360))
        mjd = 60000.0 + 0.01 * k
        ap_ratio = rng.uniform(0.05, 0.15)  # outer/inner aperture flux - 1
        psf_sigma = rng.uniform(1.8, 3.0, 5)
        pressure = np.nan if k == 1 else 61500.0 + 10 * k
        dets = [0, 1, 2, 3, NON_SCIENCE_DETECTOR]
        for j, det in enumerate(dets):
            vs_rows["visit"].append(visit)
            vs_rows["detector"].append(det)
            vs_rows["physical_filter"].append(pf)
            vs_rows["band"].append(band)
            vs_rows["mjd"].append(mjd)
            vs_rows["exptime"].append(exptime)
            vs_rows["boresight_ra"].append(b_ra)
            vs_rows["boresight_dec"].append(b_dec)
            vs_rows["boresight_rot_angle"].append(rot)
            vs_rows["boresight_hour_angle"].append(-10.0 + k)
            vs_rows["zenith_distance"].append(20.0)
            vs_rows["parallactic_angle"].append(0.0)
            vs_rows["air_pressure"].append(pressure)
            vs_rows["psfSigma"].append(psf_sigma[j])
            vs_rows["pixelScale"].append(np.nan if j == 0 else 0.168)
            vs_rows["skyBg"].append(100.0 + j)
            vs_rows["bbox_min_x"].append(0)
            vs_rows["bbox_min_y"].append(0)
            vs_rows["bbox_max_x"].append(n_pix - 1)
            vs_rows["bbox_max_y"].append(n_pix - 1)
        fwhm = psf_sigma * np.array([0.168] * 5) * np.sqrt(8 * np.log(2))
        visit_truth[visit] = {"exptime": exptime, "ap_ratio": ap_ratio, "band": band,
                              "physical_filter": pf, "mjd": mjd, "telra": b_ra,
                              "teldec": b_dec, "pressure_mbar": pressure / 100.0,
                              "psf_fwhm": float(np.median(fwhm)), "rot": rot,
                              "detector_fwhm": {d: float(f) for d, f in zip(dets, fwhm)
                                                if d != NON_SCIENCE_DETECTOR}}

        cols = {c: [] for c in SOURCE_COLUMNS}
        meta = {"kind": [], "star": [], "true_mag": []}

        def add(ra, dec, det, x, y, mag_true, kind, star_id, *, ext=0.0, parent=0, nchild=0,
                sky=False, flag=None, flux_override=None, snr=None,
                exptime=exptime, ap_ratio=ap_ratio, visit=visit, cols=cols, meta=meta):
            # (Loop values bound as defaults: this visit's values, explicitly.)
            n = ra.size
            f_true = exptime * 10 ** (-0.4 * (mag_true - ZP_INST))
            bkg = rng.normal(0.0, 0.5, n)
            sigma = np.sqrt(np.maximum(f_true, 0) + AREA12 * SKY_VAR)
            flux = f_true + AREA12 * bkg + rng.normal(0, 1, n) * sigma
            if snr is not None:  # noiseless flux with a prescribed S/N
                flux = f_true + AREA12 * bkg
                sigma = f_true / snr
            if flux_override is not None:
                flux = flux_override(flux)
            outer = (f_true * (1 + ap_ratio) + (17.0**2 / 12.0**2) * AREA12 * bkg
                     + rng.normal(0, 1, n) * sigma * 0.01)
            cols["sourceId"].append(np.arange(n) + 0)  # replaced below
            cols["visit"].append(np.full(n, visit))
            cols["detector"].append(det)
            cols["ra"].append(ra)
            cols["dec"].append(dec)
            cols["x"].append(x)
            cols["y"].append(y)
            cols["apFlux_12_0_instFlux"].append(flux)
            cols["apFlux_12_0_instFluxErr"].append(sigma)
            cols["apFlux_17_0_instFlux"].append(outer)
            cols["apFlux_17_0_instFluxErr"].append(sigma * 1.4)
            cols["apFlux_17_0_flag"].append(np.zeros(n, bool))
            cols["localBackground_instFlux"].append(bkg)
            for fl in BAD_FLAGS:
                cols[fl].append(np.zeros(n, bool) if flag is None else flag == fl)
            cols["extendedness"].append(np.broadcast_to(ext, (n,)).astype(float))
            cols["parentSourceId"].append(np.broadcast_to(parent, (n,)).astype(np.int64))
            cols["deblend_nChild"].append(np.full(n, nchild))
            cols["sky_source"].append(np.full(n, sky))
            cols["calib_psf_candidate"].append(np.zeros(n, bool))
            cols["detect_isPrimary"].append(np.full(n, True))
            meta["kind"].append(np.broadcast_to(np.asarray(kind), (n,)).astype("U16"))
            meta["star"].append(np.broadcast_to(star_id, (n,)).astype(np.int64))
            # Count-rate magnitude: -2.5 log10(f_true / exptime).
            meta["true_mag"].append(np.broadcast_to(mag_true - ZP_INST, (n,)).astype(float))

        # Stars: where they fall on a detector in this visit.
        off = np.zeros(n_all)
        mx = sx + np.where(moving, 0.5 * k, 0.0)
        ra_t, dec_t = _offset(TRACT_RA, TRACT_DEC, mx, sy + off)
        jx, jy = rng.normal(0, jitter_arcsec, (2, n_all))
        if defects:
            # 1 % outlier positions, 0.6" off: still within the match radius.
            out = rng.random(n_all) < 0.01
            jx[out] += 0.6
        ra_o, dec_o = _offset(ra_t, dec_t, jx, jy)
        det, x, y = camera.sky_to_pixel(ra_o, dec_o, b_ra, b_dec, rot)
        on = det >= 0
        if band == "N921":
            mags = np.full(n_all, 19.0)
        else:
            mags = star_mag[band]
        idx = np.flatnonzero(on)
        kinds = np.full(idx.size, "good", dtype="U16")
        if defects:
            u = rng.random(idx.size)
            kinds[u < 0.03] = "flagged"
            kinds[(u >= 0.03) & (u < 0.04)] = "nan_flux"
            kinds[(u >= 0.04) & (u < 0.05)] = "neg_flux"
            kinds[(u >= 0.05) & (u < 0.06)] = "ext_nan"
        for kind in np.unique(kinds):
            sel = idx[kinds == kind]
            kw = {}
            if kind == "flagged":
                kw["flag"] = np.array(BAD_FLAGS)[rng.integers(0, len(BAD_FLAGS), sel.size)]
            if kind == "nan_flux":
                kw["flux_override"] = lambda f: np.full_like(f, np.nan)
            if kind == "neg_flux":
                kw["flux_override"] = lambda f: -np.abs(f)
            if kind == "ext_nan":
                kw["ext"] = np.nan
            add(ra_o[sel], dec_o[sel], det[sel], x[sel], y[sel], mags[sel], kind, sel, **kw)

        def random_sources(n, b_ra=b_ra, b_dec=b_dec, rot=rot):
            rr = field_radius_arcsec * np.sqrt(rng.random(n))
            pp = rng.uniform(0, 2 * np.pi, n)
            ra_r, dec_r = _offset(TRACT_RA, TRACT_DEC, rr * np.cos(pp), rr * np.sin(pp))
            d, xx, yy = camera.sky_to_pixel(ra_r, dec_r, b_ra, b_dec, rot)
            ok = d >= 0
            return ra_r[ok], dec_r[ok], d[ok], xx[ok], yy[ok]

        # Galaxies (extended), observed at their positions.
        g_ra, g_dec = _offset(TRACT_RA, TRACT_DEC, gx, gy)
        gd, gxx, gyy = camera.sky_to_pixel(g_ra, g_dec, b_ra, b_dec, rot)
        ok = gd >= 0
        add(g_ra[ok], g_dec[ok], gd[ok], gxx[ok], gyy[ok], gal_mag[ok], "galaxy", -1, ext=1.0)
        if defects:
            for kind, n, kw, mag in (
                ("sky", 5, {"sky": True}, 24.0),
                ("deblended", 3, {"nchild": 2}, 19.0),
                ("deblended", 6, {"parent": 12345}, 19.5),
                ("faint", 5, {"snr": 5.0}, 22.0),
                ("bright", 3, {"snr": 2000.0}, 16.0),
            ):
                ra_r, dec_r, d, xx, yy = random_sources(n)
                add(ra_r, dec_r, d, xx, yy, np.full(ra_r.size, mag), kind, -1, **kw)
            ra_r, dec_r, d, xx, yy = random_sources(5)
            add(ra_r, dec_r, np.full(ra_r.size, NON_SCIENCE_DETECTOR), xx, yy,
                np.full(ra_r.size, 19.0), "nondetector", -1)

        table = {c: np.concatenate(v) if v else np.empty(0) for c, v in cols.items()}
        n = table["ra"].size
        if visit == empty_visit:
            table = {c: v[:0] for c, v in table.items()}
            meta = {c: [v[0][:0]] for c, v in meta.items()}
            n = 0
        table["sourceId"] = np.arange(next_id, next_id + n, dtype=np.int64)
        write_source_table(path, visit, table)
        truth_rows["source_id"].append(table["sourceId"])
        for c in ("kind", "star", "true_mag"):
            truth_rows[c].append(np.concatenate(meta[c]))
        truth_rows["visit"].append(np.full(n, visit))
        truth_rows["ra"].append(table["ra"])
        truth_rows["dec"].append(table["dec"])
        next_id += n

    write_visit_summary(path, {k: np.asarray(v) for k, v in vs_rows.items()})
    t = {k: np.concatenate(v) for k, v in truth_rows.items()}
    return SyntheticTruth(
        source_id=t["source_id"], kind=t["kind"], star=t["star"], true_mag=t["true_mag"],
        visit=t["visit"], ra=t["ra"], dec=t["dec"], star_ra=star_ra, star_dec=star_dec,
        star_moving=moving, visits=visit_truth, empty_visit=empty_visit, far_visit=far_visit,
        nb_visit=nb_visit,
    )
