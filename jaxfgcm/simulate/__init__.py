"""A simulated HSC tract with ground truth, written as a jaxfgcm data repository.

``simulate(repo_dir, tract_id=9615, preset="tiny", seed=1)`` writes a repository
(docs/repository.md) whose fluxes come from SEDs integrated through atmosphere x passband
directly (never through the LUT), plus ``truth/`` (docs/simulation.md). The command line is
``python -m jaxfgcm.simulate --repo DIR --tract 9615 [--preset tiny|tract|large] [--seed N]``.

Modules: ``sky`` (SED library, stars, galaxies), ``observing`` (nights, visits, weather,
clouds), ``instrument`` (star flat, detector offsets, mirror decline, detector constants),
``photometry`` (fluxes, noise, aperture losses, defects per visit), ``writer`` (the files),
``presets``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxfgcm.simulate.presets import PRESETS, Preset, get_preset

__all__ = ["PRESETS", "Preset", "SimulationContext", "build_context", "get_preset",
           "simulate", "standard_passbands", "tract_centre"]

#: Centres of known tracts in HSC's rings sky map (hsc_rings_v1: 120 rings). 9615 is ring 60,
#: tract 146 of 243, in the GAMA15H field (docs/repository.md).
KNOWN_TRACTS = {9615: (216.29629629629628, 0.7438016528925696)}
#: Local midnight (HST) of the first night considered: 2026-04-20, when RA 216 transits at
#: about midnight, so each night can sample airmass 1.05-2.
FIRST_MIDNIGHT_MJD = 61150.0 + 10.0 / 24.0
#: Exposure times (s): HSC-SSP Wide uses 150 s in g, r and 200 s in i, z, y.
EXPTIME = {"g": 150.0, "r": 150.0, "i": 200.0, "z": 200.0, "y": 200.0}
OVERHEAD_S = 40.0
#: Objects within this radius of the boresight are projected onto the detectors.
FIELD_RADIUS_DEG = 0.95


def tract_centre(tract_id: int) -> tuple[float, float]:
    """(ra, dec) of a tract: the HSC rings sky map centre for known ids, else an error."""
    try:
        return KNOWN_TRACTS[int(tract_id)]
    except KeyError:
        raise ValueError(f"tract {tract_id}: centre unknown to the simulator "
                         f"(known: {sorted(KNOWN_TRACTS)})") from None


@dataclass
class SimulationContext:
    """Everything that is fixed before the per-visit loop."""

    seed: int
    preset: Preset
    config: object
    tract_id: int
    tract_ra: float
    tract_dec: float
    camera: object
    throughput: object
    atmosphere: object
    wavelength: np.ndarray
    q: np.ndarray
    library: object
    passbands: dict
    i0_instrument: dict
    lambda_ref: dict
    std_passbands: dict
    template_std_mag: dict  # band -> (n_templates,) standard mag at ref_mag = 0
    sky: object
    nights: object
    schedule: object
    clouds: object
    instrument: object
    latitude: float
    longitude: float
    field_radius_deg: float = FIELD_RADIUS_DEG


def _subset_camera(camera, n):
    """The ``n`` detectors closest to the field centre (tiny preset)."""
    from jaxfgcm.camera import Camera

    keep = np.sort(np.argsort(camera.centre_radius_mm, kind="stable")[:n])
    return Camera(ids=camera.ids[keep], names=camera.names[keep], x_mm=camera.x_mm[keep],
                  y_mm=camera.y_mm[keep], yaw_deg=camera.yaw_deg[keep], nx=camera.nx[keep],
                  ny=camera.ny[keep], pixel_size_mm=camera.pixel_size_mm[keep],
                  plate_scale_arcsec_per_mm=camera.plate_scale_arcsec_per_mm)


def standard_passbands(config, throughput, atmosphere, wavelength) -> dict[str, np.ndarray]:
    """Band -> standard passband: focal-plane-mean instrument of the band's standard physical
    filter x the standard atmosphere of ``config.standard_atmosphere`` at its airmass."""
    sa = config.standard_atmosphere
    t_std = atmosphere.transmission(sa.pressure, sa.pwv, sa.o3, sa.tau, sa.alpha, sa.airmass)
    return {b: throughput.mean_passband(f, wavelength) * t_std
            for b, f in config.instrument.std_physical_filters.items()}


def build_context(config=None, preset: str | Preset = "tiny", seed: int = 1,
                  tract_id: int = 9615) -> SimulationContext:
    """Draw the sky, the instrument, the nights and the schedule (deterministic in ``seed``)."""
    from jaxfgcm.atmosphere import BuiltinAtmosphere
    from jaxfgcm.camera import hsc_like_camera
    from jaxfgcm.config import load_config
    from jaxfgcm.lut.build import config_wavelength, quadrature_weights
    from jaxfgcm.simulate import instrument, observing, sky
    from jaxfgcm.throughput import hsc_like_throughput

    config = load_config() if config is None else config
    preset = get_preset(preset) if isinstance(preset, str) else preset
    ra0, dec0 = tract_centre(tract_id)
    # Independent streams per component: changing one part of the model does not reshuffle
    # the others.
    streams = np.random.SeedSequence([int(seed), 20260420]).spawn(5)
    rng_sky, rng_nights, rng_sched, rng_clouds, rng_inst = (np.random.default_rng(s)
                                                            for s in streams)
    camera = hsc_like_camera()
    if preset.n_detectors is not None:
        camera = _subset_camera(camera, preset.n_detectors)
    throughput = hsc_like_throughput(camera)
    lam = config_wavelength(config.lut)
    atmosphere = BuiltinAtmosphere(wavelength=lam, lambda_norm=config.lut.aerosol_lambda_norm)
    q = quadrature_weights(lam)
    library = sky.make_sed_library(lam)
    filters = list(preset.physical_filters)
    unknown = [f for f in filters if f not in config.instrument.physical_filters]
    if unknown:
        raise ValueError(f"preset {preset.name}: physical filters {unknown} not in the config")
    passbands = {f: throughput.passbands(f, lam) for f in filters}
    i0_inst = {f: (passbands[f] * q).sum(axis=1) for f in filters}
    std_pb = standard_passbands(config, throughput, atmosphere, lam)
    lambda_ref = {b: float((s * q * lam).sum() / (s * q).sum()) for b, s in std_pb.items()}
    template_std = {b: -2.5 * np.log10((library.fnu * (s * q)).sum(axis=1) / (s * q).sum())
                    for b, s in std_pb.items()}
    objects = sky.make_sky(
        rng_sky, library, lambda b: template_std[b], ra0=ra0, dec0=dec0,
        radius_deg=preset.tract_radius_deg + preset.margin_deg, n_stars=preset.n_stars,
        n_galaxies=preset.n_galaxies, star_mag_range=preset.star_mag_range,
        galaxy_mag_range=preset.galaxy_mag_range, blend_fraction=preset.blend_fraction)
    site = config.site
    nights = observing.make_nights(rng_nights, FIRST_MIDNIGHT_MJD, preset.n_nights,
                                   preset.span_days, config.standard_atmosphere.pressure)
    band_of = config.instrument.physical_filters
    schedule = observing.make_schedule(
        rng_sched, nights, ra0=ra0, dec0=dec0, visits_per_night=preset.visits_per_night,
        filters_per_night=preset.filters_per_night, physical_filters=filters, band_of=band_of,
        exptime={f: EXPTIME[band_of[f]] for f in filters}, overhead_s=OVERHEAD_S,
        dither_deg=preset.dither_deg, latitude_deg=site.latitude_deg,
        longitude_deg=site.longitude_deg, max_secz=preset.max_secz)
    clouds = observing.make_clouds(rng_clouds, schedule, preset.nonphotometric_fraction)
    inst_model = instrument.make_instrument(rng_inst, filters, camera.ids,
                                            mirror_mjd0=float(nights.mjd_mid[0]) - 0.5)
    return SimulationContext(
        seed=int(seed), preset=preset, config=config, tract_id=int(tract_id), tract_ra=ra0,
        tract_dec=dec0, camera=camera, throughput=throughput, atmosphere=atmosphere,
        wavelength=lam, q=q, library=library, passbands=passbands, i0_instrument=i0_inst,
        lambda_ref=lambda_ref, std_passbands=std_pb, template_std_mag=template_std,
        sky=objects, nights=nights, schedule=schedule, clouds=clouds, instrument=inst_model,
        latitude=site.latitude_deg, longitude=site.longitude_deg)


def simulate(repo_dir: str | Path, tract_id: int = 9615, preset: str | Preset = "tiny",
             seed: int = 1, config=None, build_lut: bool | None = None,
             overwrite: bool = False, progress: bool = False) -> dict:
    """Simulate a tract and write it as a repository; returns a summary dict (counts, times)."""
    from jaxfgcm.simulate.writer import write_simulation

    ctx = build_context(config, preset, seed, tract_id)
    return write_simulation(ctx, Path(repo_dir), build_lut=build_lut, overwrite=overwrite,
                            progress=progress)
