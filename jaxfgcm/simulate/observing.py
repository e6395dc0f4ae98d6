"""The observing log: nights, visits, dithers, hour angles, airmasses and weather.

Geometry (no refraction, as fgcm): ``sec z = 1 / (sin dec sin lat + cos dec cos lat cos HA)``
with HA = LST - RA; LST from the IAU 1982 GMST polynomial in UT (Meeus, Astronomical
Algorithms, eq. 12.4; UT1 - UTC and TAI - UTC are ignored: < 1 min of time, irrelevant here).

Weather per night follows FGCM's model (Burke et al. 2018, sec. 4): O3 and the aerosol Angstrom
exponent alpha constant through a night; ln tau and ln PWV linear in time (PWV with a small
quadratic term); the surface pressure drifts linearly (recorded per visit, as VisitInfo does).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Hawaii-Aleutian Standard Time = UTC - 10 h; local midnight at 10:00 UTC.
_UTC_OFFSET_H = -10.0


def gmst_deg(mjd: np.ndarray) -> np.ndarray:
    """Greenwich mean sidereal time (deg) at UT ``mjd`` (Meeus eq. 12.4)."""
    d = np.asarray(mjd, dtype=np.float64) - 51544.5  # days from J2000.0
    t = d / 36525.0
    return np.mod(280.46061837 + 360.98564736629 * d + 0.000387933 * t**2 - t**3 / 38710000.0,
                  360.0)


def hour_angle_deg(mjd, ra_deg, longitude_deg):
    """Local hour angle (deg, in [-180, 180), positive west) of ``ra_deg`` at ``mjd``."""
    ha = gmst_deg(mjd) + longitude_deg - np.asarray(ra_deg, dtype=np.float64)
    return np.mod(ha + 180.0, 360.0) - 180.0


def cos_zenith(ha_deg, dec_deg, latitude_deg):
    h, d, p = np.radians(ha_deg), np.radians(dec_deg), np.radians(latitude_deg)
    return np.sin(d) * np.sin(p) + np.cos(d) * np.cos(p) * np.cos(h)


def secz(ha_deg, dec_deg, latitude_deg):
    """sec(zenith distance), fgcm's airmass (no refraction or curvature term)."""
    return 1.0 / cos_zenith(ha_deg, dec_deg, latitude_deg)


def parallactic_angle_deg(ha_deg, dec_deg, latitude_deg):
    """Parallactic angle (deg): tan q = sin H / (tan lat cos dec - sin dec cos H)."""
    h, d, p = np.radians(ha_deg), np.radians(dec_deg), np.radians(latitude_deg)
    return np.degrees(np.arctan2(np.sin(h), np.tan(p) * np.cos(d) - np.sin(d) * np.cos(h)))


@dataclass(frozen=True)
class Nights:
    """Per night: the atmosphere's law in time and the seeing/sky conditions.

    Parameters at time t (days since ``mjd_mid``, the night's local midnight): PWV =
    exp(ln_pwv0 + ln_pwv_slope t) + pwv_quad t^2; tau = exp(ln_tau0 + ln_tau_slope t);
    pressure = pressure0 + pressure_slope t (mbar); o3 and alpha constant.
    """

    mjd_mid: np.ndarray
    o3: np.ndarray
    alpha: np.ndarray
    ln_pwv0: np.ndarray
    ln_pwv_slope: np.ndarray  # per day
    pwv_quad: np.ndarray  # mm per day^2
    ln_tau0: np.ndarray
    ln_tau_slope: np.ndarray
    pressure0: np.ndarray
    pressure_slope: np.ndarray
    seeing_fwhm: np.ndarray  # arcsec, the night's median
    sky_factor: np.ndarray  # moon: sky brightness x this (>= 1)

    @property
    def n(self) -> int:
        return int(self.mjd_mid.size)

    def atmosphere(self, night: np.ndarray, mjd: np.ndarray) -> dict[str, np.ndarray]:
        t = np.asarray(mjd) - self.mjd_mid[night]
        return {
            "pressure": self.pressure0[night] + self.pressure_slope[night] * t,
            "pwv": np.exp(self.ln_pwv0[night] + self.ln_pwv_slope[night] * t)
            + self.pwv_quad[night] * t**2,
            "o3": self.o3[night],
            "tau": np.exp(self.ln_tau0[night] + self.ln_tau_slope[night] * t),
            "alpha": self.alpha[night],
        }


def make_nights(rng: np.random.Generator, first_mjd_midnight: float, n_nights: int,
                span_days: float, standard_pressure: float) -> Nights:
    """Nights spread over ``span_days``; weather drawn around Maunakea's typical values.

    Ranges (docs/simulation.md): PWV 0.7-4 mm at midnight, changing by up to x1.5 through the
    night; tau(7750 A) 0.015-0.10 changing by up to x1.4; alpha 0.4-1.8; O3 240-300 DU;
    pressure within +-3 mbar of the standard with drifts up to 1.5 mbar per night.
    """
    offsets = np.sort(rng.choice(np.arange(int(span_days)), size=n_nights, replace=False))
    mjd_mid = first_mjd_midnight + offsets.astype(np.float64)
    half_night = 0.2  # days from midnight to the end of the usable night
    return Nights(
        mjd_mid=mjd_mid,
        o3=rng.uniform(240.0, 300.0, n_nights),
        alpha=rng.uniform(0.4, 1.8, n_nights),
        ln_pwv0=np.log(rng.uniform(0.7, 4.0, n_nights)),
        ln_pwv_slope=rng.uniform(-1.0, 1.0, n_nights) * np.log(1.5) / (2 * half_night),
        pwv_quad=rng.uniform(-2.0, 2.0, n_nights),
        ln_tau0=np.log(rng.uniform(0.015, 0.10, n_nights)),
        ln_tau_slope=rng.uniform(-1.0, 1.0, n_nights) * np.log(1.4) / (2 * half_night),
        pressure0=standard_pressure + rng.uniform(-3.0, 3.0, n_nights),
        pressure_slope=rng.uniform(-1.5, 1.5, n_nights) / (2 * half_night),
        seeing_fwhm=rng.uniform(0.5, 0.95, n_nights),
        sky_factor=1.0 + 2.0 * rng.random(n_nights) ** 2,
    )


@dataclass(frozen=True)
class Schedule:
    """One row per visit (sorted by visit id = time order)."""

    visit: np.ndarray  # int64
    night: np.ndarray  # int32
    mjd: np.ndarray  # mid-exposure
    physical_filter: np.ndarray  # str
    band: np.ndarray  # str
    exptime: np.ndarray
    ra: np.ndarray  # boresight
    dec: np.ndarray
    rot_deg: np.ndarray
    ha_deg: np.ndarray
    zenith_deg: np.ndarray
    parallactic_deg: np.ndarray
    secz: np.ndarray
    seeing_fwhm: np.ndarray  # arcsec at the boresight
    sky_factor: np.ndarray

    @property
    def n(self) -> int:
        return int(self.visit.size)


def dither_offsets(rng, n, max_offset_deg):
    """Dither pointings uniform in a disc of radius ``max_offset_deg`` (tangent-plane degrees)."""
    r = max_offset_deg * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    return r * np.cos(phi), r * np.sin(phi)


def make_schedule(rng: np.random.Generator, nights: Nights, *, ra0: float, dec0: float,
                  visits_per_night: int, filters_per_night: int,
                  physical_filters: list[str], band_of: dict[str, str],
                  exptime: dict[str, float], overhead_s: float, dither_deg: float,
                  latitude_deg: float, longitude_deg: float, max_secz: float,
                  first_visit: int = 1000) -> Schedule:
    """Visits on each night, in filter blocks, spread over the hours the field is up.

    Each night observes ``filters_per_night`` filters (HSC changes filters rarely), cycling
    through ``physical_filters`` so every filter gets about the same number of visits. Visit
    times are spread over the part of the night (19:30-05:30 local) when the tract centre is
    below ``max_secz`` so that each night samples a range of airmass.
    """
    rows = []
    cursor = 0
    n_f = len(physical_filters)
    for n in range(nights.n):
        filt = [physical_filters[(cursor + k) % n_f] for k in range(filters_per_night)]
        cursor += filters_per_night
        # The usable window: local 19:30 to 05:30 and the field below max_secz.
        grid = nights.mjd_mid[n] + np.linspace(-4.5, 5.5, 601) / 24.0
        ok = secz(hour_angle_deg(grid, ra0, longitude_deg), dec0, latitude_deg)
        ok = (ok > 0) & (ok < max_secz)
        if not ok.any():
            raise ValueError(f"night {n}: the field never rises below airmass {max_secz}")
        t0, t1 = grid[ok][0], grid[ok][-1]
        k_per = np.diff(np.linspace(0, visits_per_night, filters_per_night + 1).round()).astype(int)
        # Random start times, then pushed apart to at least one exposure + overhead.
        times = np.sort(rng.uniform(t0, t1, visits_per_night))
        dt_min = (max(exptime[f] for f in filt) + overhead_s) / 86400.0
        for i in range(1, times.size):
            times[i] = max(times[i], times[i - 1] + dt_min)
        times = times - max(0.0, times[-1] - t1)  # keep the last one inside the window
        for i in range(times.size - 2, -1, -1):
            times[i] = min(times[i], times[i + 1] - dt_min)
        fl = np.repeat(filt, k_per)
        for t, f in zip(times, fl):
            rows.append((n, t + exptime[f] / 2 / 86400.0, f))
    nv = len(rows)
    night = np.array([r[0] for r in rows], dtype=np.int32)
    mjd = np.array([r[1] for r in rows])
    pf = np.array([r[2] for r in rows], dtype=str)
    dx, dy = dither_offsets(rng, nv, dither_deg)
    dec = dec0 + dy
    ra = np.mod(ra0 + dx / np.cos(np.radians(dec)), 360.0)
    rot = rng.uniform(-90.0, 90.0, nv)
    ha = hour_angle_deg(mjd, ra, longitude_deg)
    sz = secz(ha, dec, latitude_deg)
    # Seeing: the night's median, varying +-15 % from visit to visit, and x secz^0.6.
    seeing = nights.seeing_fwhm[night] * rng.uniform(0.85, 1.15, nv) * sz**0.6
    return Schedule(
        visit=first_visit + 2 * np.arange(nv, dtype=np.int64),  # HSC visit ids are even
        night=night, mjd=mjd, physical_filter=pf,
        band=np.array([band_of[f] for f in pf], dtype=str),
        exptime=np.array([exptime[f] for f in pf], dtype=np.float64),
        ra=ra, dec=dec, rot_deg=rot, ha_deg=ha, zenith_deg=np.degrees(np.arccos(1.0 / sz)),
        parallactic_deg=parallactic_angle_deg(ha, dec, latitude_deg), secz=sz,
        seeing_fwhm=seeing, sky_factor=nights.sky_factor[night],
    )


@dataclass(frozen=True)
class Clouds:
    """Per visit gray extinction (mag, positive = fainter) at the boresight and its gradient
    across the focal plane (mag per mm); photometric visits have exactly zero of both."""

    photometric: np.ndarray  # bool
    gray: np.ndarray
    grad_x: np.ndarray
    grad_y: np.ndarray

    def at(self, visit_index, fx_mm, fy_mm):
        return (self.gray[visit_index] + self.grad_x[visit_index] * np.asarray(fx_mm)
                + self.grad_y[visit_index] * np.asarray(fy_mm))


def make_clouds(rng: np.random.Generator, schedule: Schedule, fraction: float,
                gradient_fraction: float = 0.4) -> Clouds:
    """Mark ~``fraction`` of the visits non-photometric, in runs of 2-6 consecutive visits of
    one night (clouds come and go), with gray extinction log-uniform in 0.02-0.5 mag; a
    ``gradient_fraction`` of them also get a gradient of up to +-30 % of their gray across the
    field (250 mm) in a random direction."""
    n = schedule.n
    cloudy = np.zeros(n, dtype=bool)
    target = round(fraction * n)
    order = np.argsort(schedule.mjd, kind="stable")
    guard = 0
    while cloudy.sum() < target and guard < 10 * n:
        guard += 1
        start = int(rng.integers(0, n))
        length = int(rng.integers(2, 7))
        run = order[start:start + length]
        run = run[schedule.night[run] == schedule.night[order[start]]]
        run = run[: target - int(cloudy.sum())]
        cloudy[run] = True
    gray = np.where(cloudy, np.exp(rng.uniform(np.log(0.02), np.log(0.5), n)), 0.0)
    has_grad = cloudy & (rng.random(n) < gradient_fraction)
    amp = np.where(has_grad, gray * rng.uniform(0.05, 0.3, n) / 250.0, 0.0)
    ang = rng.uniform(0, 2 * np.pi, n)
    return Clouds(~cloudy, gray, amp * np.cos(ang), amp * np.sin(ang))
