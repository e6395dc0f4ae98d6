"""Fluxes of every observation: SED x atmosphere x passband, instrument, clouds, PSF, noise, defects.

Efficiency: the passband integrals are not done per observation. For each (visit, detector) the
atmosphere x instrument response is evaluated at the lowest and highest airmass found on the
detector (its corners), contracted with the whole SED library by one matrix product, and each
observation's count rate is interpolated linearly *in magnitude* in sec z between the two. The
residual of that interpolation is measured in tests/test_simulate.py (<< 0.1 mmag; the value is
in docs/simulation.md). The same arrays give the truth zeropoint at the detector centre.

Count rate of object j (template k, amplitude 10^(-0.4 (ref_mag + 48.6)) erg/s/cm^2/Hz) on
detector d of visit v, in ADU/s::

    rate = A / (h g) 10^(-0.4 (ref_mag + 48.6)) int f_k(lambda) T_atm(lambda; v, secz_j)
           S_d(lambda) dlambda / lambda x 10^(-0.4 (instrument loss + gray))

The aperture flux is rate x exptime x the Moffat (beta = 3) encircled energy of the aperture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jaxfgcm.simulate import instrument as inst
from jaxfgcm.simulate.observing import hour_angle_deg
from jaxfgcm.simulate.observing import secz as secz_of

#: Moffat index of the PSF (HSC-like wings; beta = 3 gives a 12 px aperture loss of 1-4 %).
MOFFAT_BETA = 3.0
APERTURES_PX = (12.0, 17.0)
#: Dark-sky surface brightness at Maunakea (AB mag/arcsec^2), per band.
SKY_MAG = {"g": 22.0, "r": 21.2, "i": 20.4, "z": 19.6, "y": 18.7}
#: Relative growth of the PSF FWHM from the field centre to r = 250 mm (focal-plane seeing).
FWHM_FIELD_GROWTH = 0.08
#: Residual local background after sky subtraction: per-visit mean and per-source scatter, as
#: fractions of the sky level; the measurement uses an annulus of this many pixels.
LOCAL_BG_VISIT = 1.0e-3
LOCAL_BG_SOURCE = 5.0e-4
ANNULUS_PIXELS = 2000.0
DETECTION_SNR = 5.0

# Defect rates per observation (docs/simulation.md).
P_COSMIC_RAY = 0.004
P_BAD_PIXEL = 0.002
P_CENTROID = 0.001
P_CORRUPT = 0.001
SKY_SOURCES_PER_DETECTOR = 2

# Truth defect codes (bit mask in truth/observations.parquet).
DEFECT = {
    "cosmic_ray": 1, "bad_pixel": 2, "saturated": 4, "edge": 8, "centroid": 16,
    "blend_child": 32, "blend_parent": 64, "corrupt_unflagged": 128, "sky_source": 256,
}


def moffat_alpha_px(fwhm_px):
    return np.asarray(fwhm_px) / (2.0 * np.sqrt(2.0 ** (1.0 / MOFFAT_BETA) - 1.0))


def moffat_encircled(radius_px, fwhm_px):
    """Fraction of a Moffat(beta) profile's flux inside ``radius_px``."""
    a = moffat_alpha_px(fwhm_px)
    return 1.0 - (1.0 + (np.asarray(radius_px) / a) ** 2) ** (1.0 - MOFFAT_BETA)


def moffat_peak_fraction(fwhm_px):
    """Fraction of the flux in the central pixel (peak surface brightness x 1 px^2)."""
    a = moffat_alpha_px(fwhm_px)
    return (MOFFAT_BETA - 1.0) / (np.pi * a * a)


def effective_fwhm_px(psf_fwhm_px, size_arcsec, pixel_scale):
    """PSF convolved with a galaxy's Gaussian-like light profile (FWHMs in quadrature)."""
    return np.sqrt(np.asarray(psf_fwhm_px) ** 2 + (2.3548 * np.asarray(size_arcsec)
                                                   / pixel_scale) ** 2)


def response_magnitudes(transmission, passbands, fnu_library, q):
    """-2.5 log10(A/(h g) int f_k T S dlambda/lambda) for every (row, template).

    transmission: (m, n_l) atmosphere; passbands: (m, n_l) instrument; fnu_library: (n_k, n_l).
    Returns (m, n_k). float64: sub-mmag bookkeeping of sums over 1601 wavelengths.
    """
    w = transmission * passbands * q
    # Filter tails reach subnormal values that slow BLAS ~100x; below 1e-15 of the peak
    # they contribute < 1e-12 mag, so contract only the columns where the passband lives.
    cols = np.flatnonzero(w.max(axis=0) > 1e-15 * w.max())
    w = np.where(w[:, cols] > 1e-15 * w.max(), w[:, cols], 0.0)
    return -2.5 * np.log10(inst.counts_per_fnu_unit() * (w @ fnu_library[:, cols].T))


@dataclass
class VisitOutput:
    sources: dict[str, np.ndarray]
    truth_obs: dict[str, np.ndarray]
    summary: dict[str, np.ndarray]
    zeropoints: dict[str, np.ndarray]


def _segment_fraction_outside(d, r):
    """Approximate fraction of a source's aperture flux lost beyond an edge at distance d."""
    d = np.clip(d, 0.0, None)
    frac = np.where(d < r, 0.5 * (1.0 - np.clip(d / r, 0, 1)) ** 1.5, 0.0)
    return frac


def simulate_visit(ctx, iv: int) -> VisitOutput:
    """Simulate one visit: its visit-summary rows, truth zeropoints, source table and truth."""
    sch, cam, sky = ctx.schedule, ctx.camera, ctx.sky
    visit = int(sch.visit[iv])
    rng = np.random.default_rng([ctx.seed, 104729, visit])
    filt = str(sch.physical_filter[iv])
    band = str(sch.band[iv])
    fi = ctx.instrument.filter_index(filt)
    mjd = float(sch.mjd[iv])
    exptime = float(sch.exptime[iv])
    ra0, dec0, rot = float(sch.ra[iv]), float(sch.dec[iv]), float(sch.rot_deg[iv])
    lat, lon = ctx.latitude, ctx.longitude
    atm = ctx.nights.atmosphere(int(sch.night[iv]), mjd)
    n_det = cam.n_detectors
    pix_scale = float(cam.pixel_scale_arcsec[0])

    # ---- per (visit, detector): airmass range, responses, PSF, sky, zeropoint --------------
    corners = cam.corners_mm()  # (n_det, 4, 2)
    c_ra, c_dec = cam.focal_plane_to_sky(corners[..., 0], corners[..., 1], ra0, dec0, rot)
    c_secz = secz_of(hour_angle_deg(mjd, c_ra, lon), c_dec, lat)
    # sec z is not linear on the sky: its extremes can lie slightly inside an edge, so an
    # observation may need a tiny extrapolation beyond [lo, hi] (accuracy: docs/simulation.md).
    lo, hi = c_secz.min(axis=1) - 1e-6, c_secz.max(axis=1) + 1e-6
    cen_ra, cen_dec = cam.focal_plane_to_sky(cam.x_mm, cam.y_mm, ra0, dec0, rot)
    secz_c = secz_of(hour_angle_deg(mjd, cen_ra, lon), cen_dec, lat)
    all_secz = np.r_[lo, hi, secz_c]
    trans = ctx.atmosphere.transmission(atm["pressure"], atm["pwv"], atm["o3"], atm["tau"],
                                        atm["alpha"], all_secz)
    pb = ctx.passbands[filt]  # (n_det, n_l)
    pb3 = np.concatenate([pb, pb, pb])
    mag_resp = response_magnitudes(trans, pb3, ctx.library.fnu, ctx.q)  # (3 n_det, n_k)
    m_lo, m_hi = mag_resp[:n_det], mag_resp[n_det:2 * n_det]
    w_c = trans[2 * n_det:] * pb * ctx.q
    i0_c = w_c.sum(axis=1)
    i10_c = (w_c * (ctx.wavelength - ctx.lambda_ref[band])).sum(axis=1) / i0_c
    r_det = cam.centre_radius_mm
    fwhm_px = (sch.seeing_fwhm[iv] / pix_scale) * (1.0 + FWHM_FIELD_GROWTH
                                                     * (r_det / 250.0) ** 2)
    frac12_c = moffat_encircled(APERTURES_PX[0], fwhm_px)
    sky_adu = (inst.counts_per_fnu_unit() * 10 ** (-0.4 * (SKY_MAG[band] + 48.6))
               * ctx.i0_instrument[filt] * pix_scale**2 * exptime * sch.sky_factor[iv]
               * np.sqrt(sch.secz[iv]))
    loss_c = ctx.instrument.loss(fi, np.arange(n_det), cam.x_mm, cam.y_mm, mjd)
    gray_c = ctx.clouds.at(iv, cam.x_mm, cam.y_mm)
    zpt = (inst.zpt_ab_no_throughput() + 2.5 * np.log10(i0_c) - loss_c - gray_c
           + 2.5 * np.log10(frac12_c))
    det_ids = cam.ids
    zeropoints = {
        "visit": np.full(n_det, visit, np.int64), "detector": det_ids.astype(np.int16),
        "physical_filter": np.full(n_det, filt), "band": np.full(n_det, band),
        "zeropoint": zpt, "zpt_ab_no_throughput": np.full(n_det, inst.zpt_ab_no_throughput()),
        "atmosphere_instrument": 2.5 * np.log10(i0_c), "i0": i0_c, "i10": i10_c,
        "detector_offset": ctx.instrument.detector_offset[fi],
        "star_flat_centre": ctx.instrument.star_flat(fi, cam.x_mm, cam.y_mm),
        "mirror": np.full(n_det, float(ctx.instrument.mirror(mjd))),
        "gray": gray_c, "aperture_correction": 2.5 * np.log10(frac12_c),
        "secz_centre": secz_c, "photometric": np.full(n_det, bool(ctx.clouds.photometric[iv])),
    }
    summary = {
        "visit": np.full(n_det, visit, np.int64), "detector": det_ids.astype(np.int16),
        "physical_filter": np.full(n_det, filt), "band": np.full(n_det, band),
        "mjd": np.full(n_det, mjd), "exptime": np.full(n_det, exptime),
        "boresight_ra": np.full(n_det, ra0), "boresight_dec": np.full(n_det, dec0),
        "boresight_rot_angle": np.full(n_det, rot),
        "boresight_hour_angle": np.full(n_det, float(sch.ha_deg[iv])),
        "zenith_distance": np.full(n_det, float(sch.zenith_deg[iv])),
        "parallactic_angle": np.full(n_det, float(sch.parallactic_deg[iv])),
        "air_pressure": np.full(n_det, float(atm["pressure"]) * 100.0),  # mbar -> Pa
        "psfSigma": fwhm_px / 2.3548, "pixelScale": cam.pixel_scale_arcsec.copy(),
        "skyBg": sky_adu,
        "bbox_min_x": np.zeros(n_det, np.int32), "bbox_min_y": np.zeros(n_det, np.int32),
        "bbox_max_x": (cam.nx - 1).astype(np.int32), "bbox_max_y": (cam.ny - 1).astype(np.int32),
    }

    # ---- objects on the detectors ----------------------------------------------------------
    cosd = (np.sin(np.radians(dec0)) * np.sin(np.radians(sky.dec)) + np.cos(np.radians(dec0))
            * np.cos(np.radians(sky.dec)) * np.cos(np.radians(sky.ra - ra0)))
    near = np.flatnonzero(cosd > np.cos(np.radians(ctx.field_radius_deg)))
    det, x_true, y_true = cam.sky_to_pixel(sky.ra[near], sky.dec[near], ra0, dec0, rot)
    on = det >= 0
    obj = near[on]
    det, x_true, y_true = det[on], x_true[on], y_true[on]
    di = cam.index(det)
    s_j = secz_of(hour_angle_deg(mjd, sky.ra[obj], lon), sky.dec[obj], lat)
    k = sky.sed_index[obj]
    t = (s_j - lo[di]) / (hi[di] - lo[di])
    if np.any((t < -0.5) | (t > 1.5)):  # pragma: no cover - would be a geometry bug
        raise AssertionError(f"visit {visit}: an object's airmass is far outside its detector's")
    m_resp = m_lo[di, k] + t * (m_hi[di, k] - m_lo[di, k])
    fx, fy = cam.focal_plane(det, x_true, y_true)
    loss = ctx.instrument.loss(fi, di, fx, fy, mjd)
    gray = ctx.clouds.at(iv, fx, fy)
    total = exptime * 10 ** (-0.4 * (sky.ref_mag[obj] + 48.6 + m_resp + loss + gray))
    fwhm_obj = effective_fwhm_px(fwhm_px[di], sky.size_arcsec[obj], pix_scale)
    f12 = moffat_encircled(APERTURES_PX[0], fwhm_obj)
    f17 = moffat_encircled(APERTURES_PX[1], fwhm_obj)
    flux12, flux17 = total * f12, total * f17
    n_pix12, n_pix17 = np.pi * APERTURES_PX[0] ** 2, np.pi * APERTURES_PX[1] ** 2
    g = inst.GAIN_E_PER_ADU
    rn2 = inst.READ_NOISE_E**2
    sky_e_det = sky_adu * g  # electrons per pixel, per detector
    sky_sigma_det = np.sqrt(sky_e_det + rn2) / g  # ADU per pixel
    sky_e = sky_e_det[di]
    var12 = (flux12 * g + n_pix12 * (sky_e + rn2)) / g**2  # ADU^2
    var17 = (flux17 * g + n_pix17 * (sky_e + rn2)) / g**2
    detected = flux12 / np.sqrt(var12) > DETECTION_SNR
    # Blend hosts and partners are written as deblended children of a parent even when one of
    # them alone would not be detected (the pair is).
    partner = sky.blend_partner[obj]
    pos_of = np.full(sky.n, -1, dtype=np.int64)  # object index -> position in this visit
    pos_of[obj] = np.arange(obj.size)
    pair_j = np.where(partner >= 0, pos_of[np.maximum(partner, 0)], -1)
    paired = (pair_j >= 0)
    paired &= np.where(paired, det[np.maximum(pair_j, 0)] == det, False)
    paired &= detected | detected[np.maximum(pair_j, 0)]
    keep = detected | paired
    sel = np.flatnonzero(keep)
    n = sel.size
    # Re-index everything to the kept observations.
    remap = np.full(obj.size, -1, dtype=np.int64)
    remap[sel] = np.arange(n)
    obj, det, di = obj[sel], det[sel], di[sel]
    x_true, y_true, s_j = x_true[sel], y_true[sel], s_j[sel]
    flux12, flux17, var12, var17 = flux12[sel], flux17[sel], var12[sel], var17[sel]
    f12, f17, loss, gray, fwhm_obj = f12[sel], f17[sel], loss[sel], gray[sel], fwhm_obj[sel]
    total, m_resp = total[sel], m_resp[sel]
    paired = paired[sel]
    pair_local = np.where(paired, remap[np.maximum(pair_j[sel], 0)], -1)

    # ---- measurement: local background, noise, deblending, defects -------------------------
    code = np.zeros(n, dtype=np.int32)
    bg_visit = rng.normal(0.0, LOCAL_BG_VISIT) * sky_adu
    bg_true = bg_visit[di] + rng.normal(0.0, LOCAL_BG_SOURCE, n) * sky_adu[di]
    bg_meas = bg_true + rng.normal(0.0, 1.0, n) * sky_sigma_det[di] / np.sqrt(ANNULUS_PIXELS)
    # Deblending: a child keeps 1-5 % of its neighbour's light.
    contam = np.zeros(n)
    host = np.flatnonzero(paired)
    if host.size:
        c = rng.uniform(0.01, 0.05, host.size)
        contam[host] = c * flux12[pair_local[host]]
        code[host] |= DEFECT["blend_child"]
    noise12 = rng.normal(0.0, 1.0, n) * np.sqrt(var12)
    noise_ann = rng.normal(0.0, 1.0, n) * np.sqrt(np.maximum(var17 - var12, 0.0))
    factor = np.ones(n)  # multiplicative corruption of both apertures
    flags = {name: np.zeros(n, dtype=bool) for name in (
        "pixelFlags_edge", "pixelFlags_interpolatedCenter", "pixelFlags_saturatedCenter",
        "pixelFlags_crCenter", "pixelFlags_bad", "pixelFlags_interpolated",
        "pixelFlags_saturated", "centroid_flag", "apFlux_12_0_flag", "apFlux_17_0_flag",
        "localBackground_flag")}
    add12 = np.zeros(n)
    # Saturation: the central pixel exceeds the full well.
    peak_e = total * g * moffat_peak_fraction(fwhm_obj) + sky_e_det[di]
    sat = peak_e > inst.FULL_WELL_E
    factor[sat] *= rng.uniform(0.5, 0.9, int(sat.sum()))  # bleed trails lose flux
    for f in ("pixelFlags_saturatedCenter", "pixelFlags_saturated",
              "pixelFlags_interpolatedCenter", "pixelFlags_interpolated"):
        flags[f] |= sat
    code[sat] |= DEFECT["saturated"]
    # Edges: distance to the nearest detector edge; apertures that cross it lose flux.
    d_edge = np.minimum.reduce([x_true + 0.5, cam.nx[di] - 0.5 - x_true,
                                y_true + 0.5, cam.ny[di] - 0.5 - y_true])
    edge = d_edge < APERTURES_PX[0]
    flags["pixelFlags_edge"] |= edge
    flags["apFlux_12_0_flag"] |= d_edge < APERTURES_PX[0]
    flags["apFlux_17_0_flag"] |= d_edge < APERTURES_PX[1]
    lost12 = _segment_fraction_outside(d_edge, APERTURES_PX[0])
    lost17 = _segment_fraction_outside(d_edge, APERTURES_PX[1])
    code[edge] |= DEFECT["edge"]
    # Cosmic rays (70 % at the centre), bad pixels, centroid failures, unflagged corruption.
    cr = rng.random(n) < P_COSMIC_RAY
    cr_centre = cr & (rng.random(n) < 0.7)
    add12[cr] += rng.uniform(0.0, 0.05, int(cr.sum())) * flux12[cr] + rng.uniform(
        0.0, 300.0, int(cr.sum()))
    flags["pixelFlags_crCenter"] |= cr_centre
    flags["pixelFlags_interpolatedCenter"] |= cr_centre
    flags["pixelFlags_interpolated"] |= cr
    code[cr] |= DEFECT["cosmic_ray"]
    bad = rng.random(n) < P_BAD_PIXEL
    factor[bad] *= rng.uniform(0.9, 1.0, int(bad.sum()))
    flags["pixelFlags_bad"] |= bad
    flags["pixelFlags_interpolated"] |= bad
    code[bad] |= DEFECT["bad_pixel"]
    cen_fail = rng.random(n) < P_CENTROID
    flags["centroid_flag"] |= cen_fail
    code[cen_fail] |= DEFECT["centroid"]
    corrupt = (rng.random(n) < P_CORRUPT) & ~(cr | bad | sat | edge | cen_fail)
    up = rng.random(n) < 0.5
    factor[corrupt] *= np.where(up, rng.uniform(1.1, 1.6, n), rng.uniform(0.6, 0.9, n))[corrupt]
    code[corrupt] |= DEFECT["corrupt_unflagged"]
    # Measured aperture fluxes (background-subtracted image: the residual local background
    # stays in the aperture; fgcmcal subtracts pi r^2 x localBackground_instFlux).
    meas12 = ((flux12 + contam) * (1 - lost12) * factor + add12 + noise12
              + n_pix12 * bg_true)
    meas17 = ((flux17 + contam * 1.1) * (1 - lost17) * factor + add12 + noise12 + noise_ann
              + n_pix17 * bg_true)
    err12, err17 = np.sqrt(var12), np.sqrt(var17)
    meas12[flags["apFlux_12_0_flag"] & (d_edge < 2.0)] = np.nan  # aperture centre off-chip
    meas17[flags["apFlux_17_0_flag"] & (d_edge < 2.0)] = np.nan
    # Centroids: S/N-limited noise (+ a few px for failed centroids).
    snr = flux12 / err12
    sig_c = fwhm_obj / (2.3548 * np.maximum(snr, 1.0)) + 0.01
    sig_c = np.where(cen_fail, 2.0, sig_c)
    x_meas = x_true + rng.normal(0.0, 1.0, n) * sig_c
    y_meas = y_true + rng.normal(0.0, 1.0, n) * sig_c
    ext = sky.extendedness[obj].copy()

    # ---- blend parents ---------------------------------------------------------------------
    # One parent row per pair (the host is the lower local index of the two).
    first = np.flatnonzero(paired & (pair_local > np.arange(n)))
    second = pair_local[first]
    n_par = first.size
    f_sum = flux12[first] + flux12[second]
    w1 = flux12[first] / np.maximum(f_sum, 1e-30)
    par = {
        "det": det[first], "x": w1 * x_meas[first] + (1 - w1) * x_meas[second],
        "y": w1 * y_meas[first] + (1 - w1) * y_meas[second],
        "f12": f_sum * (1 - np.maximum(lost12[first], lost12[second]))
        + rng.normal(0, 1, n_par) * np.sqrt(var12[first] + var12[second]) / np.sqrt(2)
        + n_pix12 * bg_true[first],
        "f17": (flux17[first] + flux17[second]) * (1 - np.maximum(lost17[first], lost17[second]))
        + rng.normal(0, 1, n_par) * np.sqrt(var17[first] + var17[second]) / np.sqrt(2)
        + n_pix17 * bg_true[first],
        "e12": np.sqrt(var12[first] + var12[second]) / np.sqrt(2),
        "e17": np.sqrt(var17[first] + var17[second]) / np.sqrt(2),
        "bg": bg_meas[first],
    }

    # ---- sky sources -----------------------------------------------------------------------
    n_sky = SKY_SOURCES_PER_DETECTOR * n_det
    sky_det_i = np.repeat(np.arange(n_det), SKY_SOURCES_PER_DETECTOR)
    sky_x = rng.uniform(50.0, cam.nx[sky_det_i] - 50.0)
    sky_y = rng.uniform(50.0, cam.ny[sky_det_i] - 50.0)
    sky_sig = np.sqrt(n_pix12 * (sky_e_det[sky_det_i] + rn2)) / g
    sky_sig17 = np.sqrt(n_pix17 * (sky_e_det[sky_det_i] + rn2)) / g
    sky_f12 = rng.normal(0.0, 1.0, n_sky) * sky_sig
    sky_f17 = sky_f12 + rng.normal(0.0, 1.0, n_sky) * np.sqrt(sky_sig17**2 - sky_sig**2)

    # ---- assemble rows: sources, then parents, then sky sources; ids per detector ----------
    n_rows = n + n_par + n_sky
    det_all = np.r_[det, par["det"], cam.ids[sky_det_i]].astype(np.int64)
    kind = np.r_[np.zeros(n, np.int8), np.ones(n_par, np.int8), np.full(n_sky, 2, np.int8)]
    order = np.lexsort((np.arange(n_rows), det_all))
    det_sorted = det_all[order]
    start = np.searchsorted(det_sorted, det_sorted, side="left")
    running = np.arange(n_rows) - start + 1
    ids_sorted = (visit * 200 + det_sorted) * (1 << 20) + running
    source_id = np.empty(n_rows, np.int64)
    source_id[order] = ids_sorted
    parent_of = np.zeros(n_rows, np.int64)
    par_ids = source_id[n:n + n_par]
    parent_of[first] = par_ids
    parent_of[second] = par_ids
    n_child = np.r_[np.zeros(n, np.int32), np.full(n_par, 2, np.int32), np.zeros(n_sky, np.int32)]
    code[first] |= DEFECT["blend_child"]
    code[second] |= DEFECT["blend_child"]
    x_all = np.r_[x_meas, par["x"], sky_x]
    y_all = np.r_[y_meas, par["y"], sky_y]
    ra_all, dec_all = cam.pixel_to_sky(det_all, x_all, y_all, ra0, dec0, rot)
    f12_all = np.r_[meas12, par["f12"], sky_f12]
    f17_all = np.r_[meas17, par["f17"], sky_f17]
    e12_all = np.r_[err12, par["e12"], sky_sig]
    e17_all = np.r_[err17, par["e17"], sky_sig17]
    bg_all = np.r_[bg_meas, par["bg"], rng.normal(0.0, 1.0, n_sky) * sky_sigma_det[sky_det_i]
                   / np.sqrt(ANNULUS_PIXELS)]
    ext_all = np.r_[ext, np.ones(n_par), np.full(n_sky, np.nan)]
    psf_cand = np.zeros(n_rows, dtype=bool)
    good = ~np.any(np.stack([flags[f] for f in flags]), axis=0) & (ext < 0.5) & (snr > 50) & (
        snr < 500) & ~paired
    psf_cand[:n] = good & (rng.random(n) < 0.6)
    sources = {
        "sourceId": source_id, "visit": np.full(n_rows, visit, np.int64),
        "detector": det_all.astype(np.int16), "ra": ra_all, "dec": dec_all,
        "x": x_all, "y": y_all,
        "apFlux_12_0_instFlux": f12_all, "apFlux_12_0_instFluxErr": e12_all,
        "apFlux_17_0_instFlux": f17_all, "apFlux_17_0_instFluxErr": e17_all,
        "localBackground_instFlux": bg_all,
        "extendedness": ext_all, "parentSourceId": parent_of, "deblend_nChild": n_child,
        "sky_source": kind == 2, "calib_psf_candidate": psf_cand,
        # Primary: not a blend parent and not a sky source (deblended children are primary).
        "detect_isPrimary": kind == 0,
    }
    for name, v in flags.items():
        sources[name] = np.r_[v, np.zeros(n_par + n_sky, bool)]
    sources = {k: sources[k][order] for k in sources}
    truth_code = np.r_[code, np.full(n_par, DEFECT["blend_parent"], np.int32),
                       np.full(n_sky, DEFECT["sky_source"], np.int32)]
    pad = np.zeros(n_par + n_sky)
    truth_obs = {
        "sourceId": source_id, "visit": np.full(n_rows, visit, np.int64),
        "detector": det_all.astype(np.int16),
        "object_id": np.r_[sky.object_id[obj], np.full(n_par + n_sky, -1, np.int64)],
        "secz": np.r_[s_j, pad], "flux12_true": np.r_[flux12, pad],
        "flux17_true": np.r_[flux17, pad],
        "response_mag": np.r_[m_resp, pad], "instrument_loss": np.r_[loss, pad],
        "gray": np.r_[gray, pad], "aperture_fraction12": np.r_[f12, pad],
        "aperture_fraction17": np.r_[f17, pad],
        "local_background_true": np.r_[bg_true, bg_true[first], np.zeros(n_sky)],
        "defects": truth_code,
    }
    truth_obs = {k: v[order] for k, v in truth_obs.items()}
    return VisitOutput(sources, truth_obs, summary, zeropoints)
