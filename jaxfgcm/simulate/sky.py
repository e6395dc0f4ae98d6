"""The simulated sky: a discrete SED library, stars and galaxies over a tract.

Stellar SEDs (docs/simulation.md, "Sky"): Pickles' library needs a package that does not
install cleanly, so stars use a physically motivated substitute, a Planck continuum with three
parametric opacity terms, tuned so that HSC-like colours follow the stellar locus roughly
(g-r from -0.25 to 1.7, r-i from -0.25 to 1.6 for Teff 10500 to 3000 K):

* hot stars: a colour temperature above Teff (bound-free opacity steepens the Paschen continuum;
  an A0 star is bluer than a 9500 K black body), and a Balmer jump below 3646 A whose depth peaks
  at A stars;
* cool stars: metal-line blanketing ~ exp(-b (4500/lambda)^3) in the blue, and TiO/MgH bands
  depressing 4700-5500 A and 5900-7400 A below 4000 K.

Galaxies use power-law f_nu ~ lambda^beta continua with a 4000 A break at a random redshift.
Every object's SED is one library template times an amplitude, so fluxes are exact matrix
products (photometry.py) and a test can recompute any of them by direct integration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# CGS constants (CODATA 2018, exact SI definitions); wavelengths in Angstrom.
H_ERG_S = 6.62607015e-27
C_ANGSTROM_S = 2.99792458e18
K_ERG_K = 1.380649e-16

#: Wavelength of the template normalisation: every template has f_nu = 1 there (i band).
NORM_WAVELENGTH = 7500.0


def _step(x):
    """Smooth 0 -> 1 step (tanh), for band edges without ringing on the 5 A grid."""
    return 0.5 * (1.0 + np.tanh(x))


def stellar_fnu(wavelength: np.ndarray, teff: float) -> np.ndarray:
    """Relative f_nu of a main-sequence star of effective temperature ``teff`` (K)."""
    lam = np.asarray(wavelength, dtype=np.float64)
    t_colour = teff * (1.0 + 0.35 * np.clip((teff - 6000.0) / 4000.0, 0.0, 1.0))
    nu = C_ANGSTROM_S / lam
    f = nu**3 / np.expm1(H_ERG_S * nu / (K_ERG_K * t_colour))
    balmer = 0.5 * np.exp(-(((teff - 9500.0) / 2500.0) ** 2))
    f = f * (1.0 - balmer * _step((3646.0 - lam) / 40.0))
    blanket = 0.45 * np.clip((6500.0 - teff) / 3000.0, 0.0, 1.2)
    f = f * np.exp(-blanket * (4500.0 / lam) ** 3)
    tio = 0.65 * np.clip((4000.0 - teff) / 1000.0, 0.0, 1.0)
    f = f * (1.0 - tio * _step((lam - 5900.0) / 80.0) * _step((7400.0 - lam) / 80.0))
    f = f * (1.0 - tio * _step((lam - 4700.0) / 80.0) * _step((5500.0 - lam) / 80.0))
    return f


def galaxy_fnu(wavelength: np.ndarray, beta: float, redshift: float) -> np.ndarray:
    """Relative f_nu of a galaxy: lambda^beta with a 40 % drop blueward of 4000 (1+z) A."""
    lam = np.asarray(wavelength, dtype=np.float64)
    f = (lam / NORM_WAVELENGTH) ** beta
    return f * (1.0 - 0.4 * _step((4000.0 * (1.0 + redshift) - lam) / 60.0))


@dataclass(frozen=True)
class SedLibrary:
    """Templates ``fnu[k, lambda]`` (f_nu, normalised to 1 at NORM_WAVELENGTH).

    ``teff[k]`` is the stellar Teff (NaN for galaxy templates); ``is_star[k]``.
    """

    wavelength: np.ndarray
    fnu: np.ndarray
    teff: np.ndarray
    is_star: np.ndarray

    @property
    def n(self) -> int:
        return int(self.fnu.shape[0])


def make_sed_library(wavelength: np.ndarray, n_stellar: int = 64) -> SedLibrary:
    """Stellar templates at Teff from 3000 to 10500 K (uniform in log Teff) + 12 galaxies."""
    lam = np.asarray(wavelength, dtype=np.float64)
    teffs = np.geomspace(3000.0, 10500.0, n_stellar)
    seds = [stellar_fnu(lam, t) for t in teffs]
    gal = [(beta, z) for beta in (0.0, 0.8, 1.6, 2.4) for z in (0.2, 0.5, 0.9)]
    seds += [galaxy_fnu(lam, b, z) for b, z in gal]
    fnu = np.array(seds)
    fnu /= np.array([np.interp(NORM_WAVELENGTH, lam, f) for f in fnu])[:, None]
    teff = np.r_[teffs, np.full(len(gal), np.nan)]
    return SedLibrary(lam, fnu, teff, np.r_[np.ones(n_stellar, bool), np.zeros(len(gal), bool)])


@dataclass(frozen=True)
class SkyObjects:
    """Every simulated object (one row each; float64 positions: 1 mas needs ~1e-9 relative).

    ``ref_mag``: the object's monochromatic AB magnitude at NORM_WAVELENGTH (its amplitude:
    f_nu(lambda) = 10^(-0.4 (ref_mag + 48.6)) * template(lambda)); ``size_arcsec``: the
    Gaussian-equivalent half-light scale of galaxies (0 for stars); ``extendedness``: what the
    pipeline measures (a few percent of galaxies look point-like, a few faint stars extended);
    ``blend_partner``: index of a close neighbour object (-1 if isolated), whose detection is
    deblended with this one.
    """

    object_id: np.ndarray  # int64
    ra: np.ndarray
    dec: np.ndarray
    is_star: np.ndarray
    sed_index: np.ndarray  # int32
    ref_mag: np.ndarray
    size_arcsec: np.ndarray
    extendedness: np.ndarray
    blend_partner: np.ndarray  # int64

    @property
    def n(self) -> int:
        return int(self.object_id.size)


def _power_law_mags(rng, n, m_min, m_max, slope):
    """n magnitudes with dN/dm ~ 10^(slope m) on [m_min, m_max] (inverse-CDF sampling)."""
    u = rng.random(n)
    a, b = 10 ** (slope * m_min), 10 ** (slope * m_max)
    return np.log10(a + u * (b - a)) / slope


def _uniform_disc(rng, n, ra0, dec0, radius_deg):
    """n points uniform on the sphere within radius_deg of (ra0, dec0)."""
    cos_r = np.cos(np.radians(radius_deg))
    cos_t = 1.0 - rng.random(n) * (1.0 - cos_r)
    theta = np.arccos(cos_t)
    phi = rng.random(n) * 2 * np.pi
    d0, a0 = np.radians(dec0), np.radians(ra0)
    # Rotate the cap from the pole to (ra0, dec0).
    sin_dec = np.sin(d0) * np.cos(theta) + np.cos(d0) * np.sin(theta) * np.cos(phi)
    dec = np.arcsin(np.clip(sin_dec, -1, 1))
    y = np.sin(theta) * np.sin(phi)
    x = np.cos(theta) * np.cos(d0) - np.sin(theta) * np.sin(d0) * np.cos(phi)
    ra = a0 + np.arctan2(y, x)
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


def draw_teff(rng, n):
    """Teff of high-latitude field stars: halo/thick-disc turn-off G stars, K and M dwarfs,
    and a few hot stars (blue horizontal branch, A stars); clipped to the library range."""
    kind = rng.choice(3, size=n, p=[0.45, 0.45, 0.10])
    teff = np.where(kind == 0, rng.normal(5800.0, 500.0, n),
                    np.where(kind == 1, rng.uniform(3000.0, 4800.0, n),
                             rng.uniform(6500.0, 10500.0, n)))
    return np.clip(teff, 3000.0, 10500.0)


def make_sky(rng: np.random.Generator, library: SedLibrary, std_mag_of_template, *,
             ra0: float, dec0: float, radius_deg: float, n_stars: int, n_galaxies: int,
             star_mag_range: tuple[float, float], galaxy_mag_range: tuple[float, float],
             blend_fraction: float, star_band: str = "i") -> SkyObjects:
    """Draw stars and galaxies uniformly over a disc.

    ``std_mag_of_template(band) -> (n_templates,)``: the standard magnitude of each template at
    unit amplitude (ref_mag = 0); the i-band standard magnitude is drawn from the number counts
    and converted to ref_mag exactly. Stars: dN/dm ~ 10^(0.2 m) (high Galactic latitude);
    galaxies: dN/dm ~ 10^(0.3 m).
    """
    m_std_i = std_mag_of_template(star_band)
    stellar = np.flatnonzero(library.is_star)
    galactic = np.flatnonzero(~library.is_star)
    # Stars: nearest stellar template in log Teff (the library is uniform in log Teff).
    teff = draw_teff(rng, n_stars)
    lt = np.log(library.teff[stellar])
    k_star = stellar[np.clip(np.rint((np.log(teff) - lt[0]) / (lt[1] - lt[0])).astype(int),
                             0, stellar.size - 1)]
    i_star = _power_law_mags(rng, n_stars, *star_mag_range, 0.2)
    k_gal = galactic[rng.integers(0, galactic.size, n_galaxies)]
    i_gal = _power_law_mags(rng, n_galaxies, *galaxy_mag_range, 0.3)
    sed = np.r_[k_star, k_gal].astype(np.int32)
    ref_mag = np.r_[i_star, i_gal] - m_std_i[sed]
    n = n_stars + n_galaxies
    ra, dec = _uniform_disc(rng, n, ra0, dec0, radius_deg)
    is_star = np.r_[np.ones(n_stars, bool), np.zeros(n_galaxies, bool)]
    size = np.where(is_star, 0.0, rng.uniform(0.3, 1.2, n))
    # Measured extendedness: 3 % of galaxies (the compact ones) look point-like; 1 % of stars
    # fainter than i = 23 look extended (noise).
    ext = (~is_star).astype(np.float64)
    compact = ~is_star & (rng.random(n) < 0.03)
    ext[compact] = 0.0
    size[compact] = 0.15  # compact but still slightly resolved: extra aperture loss
    faint_star = is_star & (np.r_[i_star, i_gal] > 23.0) & (rng.random(n) < 0.01)
    ext[faint_star] = 1.0
    # Blends: a fraction of stars get a neighbour 0.8-2.0 arcsec away (a new faint galaxy).
    partner = np.full(n, -1, dtype=np.int64)
    n_blend = round(blend_fraction * n_stars)
    if n_blend:
        hosts = rng.choice(n_stars, size=n_blend, replace=False)
        sep = rng.uniform(0.8, 2.0, n_blend) / 3600.0
        pa = rng.uniform(0, 2 * np.pi, n_blend)
        b_dec = dec[hosts] + sep * np.cos(pa)
        b_ra = ra[hosts] + sep * np.sin(pa) / np.cos(np.radians(dec[hosts]))
        b_sed = galactic[rng.integers(0, galactic.size, n_blend)].astype(np.int32)
        b_i = np.r_[i_star][hosts] + rng.uniform(0.5, 3.0, n_blend)
        new = np.arange(n, n + n_blend)
        partner[hosts] = new
        partner = np.r_[partner, hosts]
        ra, dec = np.r_[ra, np.mod(b_ra, 360.0)], np.r_[dec, b_dec]
        is_star = np.r_[is_star, np.zeros(n_blend, bool)]
        sed = np.r_[sed, b_sed]
        ref_mag = np.r_[ref_mag, b_i - m_std_i[b_sed]]
        size = np.r_[size, rng.uniform(0.3, 0.8, n_blend)]
        ext = np.r_[ext, np.ones(n_blend)]
        n += n_blend
    return SkyObjects(
        object_id=np.arange(1, n + 1, dtype=np.int64), ra=ra, dec=dec, is_star=is_star,
        sed_index=sed, ref_mag=ref_mag, size_arcsec=size, extendedness=ext,
        blend_partner=partner)
