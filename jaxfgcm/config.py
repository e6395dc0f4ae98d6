"""Typed, frozen configuration for jaxfgcm.

The defaults of the dataclasses below *are* the HSC configuration; ``configs/hsc.yaml`` spells
every one of them out (a test checks the two agree). A YAML file only has to name the fields it
changes. Unknown keys and wrongly typed values are errors that name the key.

Usage::

    cfg = load_config("configs/hsc.yaml", overrides=["fit.max_fit_cycles=3"])
    cfg.site.latitude_deg
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid (the message names the key)."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstrumentConfig:
    """The camera's bands and physical filters."""

    #: Instrument name, written into products.
    name: str = "HSC"
    #: Bands calibrated, in wavelength order (the order of every per-band array).
    bands: tuple[str, ...] = ("g", "r", "i", "z", "y")
    #: Physical filter -> band. Two physical filters may share a band (HSC-R and HSC-R2).
    physical_filters: dict[str, str] = field(
        default_factory=lambda: {
            "HSC-G": "g",
            "HSC-R": "r",
            "HSC-R2": "r",
            "HSC-I": "i",
            "HSC-I2": "i",
            "HSC-Z": "z",
            "HSC-Y": "y",
        }
    )
    #: Band -> the physical filter that defines the band's standard passband (fgcm's
    #: stdPhysicalFilterOverrideMap; HSC production uses the newer R2 and I2 filters).
    std_physical_filters: dict[str, str] = field(
        default_factory=lambda: {
            "g": "HSC-G",
            "r": "HSC-R2",
            "i": "HSC-I2",
            "z": "HSC-Z",
            "y": "HSC-Y",
        }
    )
    #: Nominal pixel scale (arcsec/pixel) where the visit summary does not give one.
    pixel_scale_arcsec: float = 0.168
    #: Primary mirror diameter (m) and detector gain (e-/ADU): the AB normalisation of the
    #: zeropoints, fgcm's zptABNoThroughput = 2.5 log10(pi (D/2)^2 / (h gain)) - 48.6 with the
    #: area in cm^2 and h in erg s (fgcm-reference §1.2; Subaru: 8.2 m, HSC: gain ~3).
    mirror_diameter_m: float = 8.2
    gain: float = 3.0


@dataclass(frozen=True)
class SiteConfig:
    """The observatory (Subaru on Maunakea)."""

    name: str = "Maunakea"
    #: Geodetic latitude in degrees (north positive); sets airmass from hour angle.
    latitude_deg: float = 19.8256
    #: Longitude in degrees (east positive); sets the local-noon boundary between nights.
    longitude_deg: float = -155.4761
    #: Elevation above sea level in metres.
    elevation_m: float = 4139.0


@dataclass(frozen=True)
class StandardAtmosphereConfig:
    """The standard atmosphere that defines standard magnitudes (fgcm's *STD values)."""

    #: Surface pressure in mbar. Maunakea's median (~616 mbar, Buton et al. 2013), not fgcm's
    #: 828 mbar, which was carried over from another site's tables.
    pressure: float = 616.0
    #: Precipitable water vapour in mm.
    pwv: float = 1.5
    #: Ozone column in Dobson units.
    o3: float = 263.0
    #: Aerosol optical depth at the normalisation wavelength (7750 A).
    tau: float = 0.03
    #: Angstrom exponent of the aerosol optical depth.
    alpha: float = 1.0
    #: Airmass (sec z) of the standard passband.
    airmass: float = 1.1


@dataclass(frozen=True)
class GridAxis:
    """One axis of the look-up table grid: ``n`` nodes from ``min`` to ``max``.

    Each axis is uniform in its own coordinate (see docs/lut.md: e.g. ln tau for aerosols).
    """

    min: float
    max: float
    n: int


@dataclass(frozen=True)
class LutConfig:
    """Wavelength sampling and atmosphere grid of the look-up table."""

    #: Wavelength range (Angstrom) of every integral.
    wavelength_min: float = 3000.0
    wavelength_max: float = 11000.0
    #: Wavelength step (Angstrom).
    wavelength_step: float = 5.0
    #: Aerosol normalisation wavelength (Angstrom), fgcm's LAMBDANORM.
    aerosol_lambda_norm: float = 7750.0
    #: Grid axes. Ranges cover Maunakea conditions (O3: fgcm's HSC range, which also bounds
    #: the fit's nightly ozone; docs/lut.md). Node counts are set by measurement
    #: (docs/lut.md, tests/test_lut.py): interpolated vs directly integrated I0 within 5e-4
    #: relative and I10 within 0.2 A over the whole range; pwv is uniform in ln pwv, the others
    #: uniform in the parameter; cubic along pwv, tau, alpha, secz; linear along pressure, o3.
    pressure: GridAxis = GridAxis(590.0, 640.0, 2)
    pwv: GridAxis = GridAxis(0.1, 10.0, 8)
    o3: GridAxis = GridAxis(220.0, 310.0, 2)
    tau: GridAxis = GridAxis(0.002, 0.35, 7)
    alpha: GridAxis = GridAxis(0.0, 2.5, 9)
    secz: GridAxis = GridAxis(1.0, 3.0, 8)


@dataclass(frozen=True)
class StarsConfig:
    """Source selection and cross-visit matching (the build-stars stage, jaxfgcm.stars)."""

    #: Calibration aperture flux (fgcmcal instFluxField); columns <field>_instFlux(Err, _flag).
    inst_flux_field: str = "apFlux_12_0"
    #: Larger aperture for the delta-aperture quantity (inner minus outer magnitude).
    outer_flux_field: str = "apFlux_17_0"
    #: Radius (pixels) of the calibration aperture, for the local-background correction.
    aperture_radius_px: float = 12.0
    #: Subtract localBackground_instFlux * pi r^2 from the aperture flux (HSC: true).
    subtract_local_background: bool = True
    #: A source is rejected if any of these boolean columns is set.
    bad_flags: tuple[str, ...] = (
        "pixelFlags_edge",
        "pixelFlags_interpolatedCenter",
        "pixelFlags_saturatedCenter",
        "pixelFlags_crCenter",
        "pixelFlags_bad",
        "pixelFlags_interpolated",
        "pixelFlags_saturated",
        "centroid_flag",
        "apFlux_12_0_flag",
        "localBackground_flag",
    )
    #: Boolean column marking sky (blank-sky) sources, which are rejected; "" disables.
    sky_source_column: str = "sky_source"
    #: Keep only isolated sources: parentSourceId == 0 and deblend_nChild == 0 (fgcmcal's
    #: default): blended parents and their deblended children are both rejected.
    require_isolated: bool = True
    #: Point sources only: extendedness below this value (.inf disables the cut).
    max_extendedness: float = 0.5
    #: Signal-to-noise range of the calibration flux.
    min_snr: float = 10.0
    max_snr: float = 1000.0
    #: Matching radius in arcsec (observations to stars).
    match_radius_arcsec: float = 1.0
    #: Stars with another star closer than this (arcsec) are dropped, both of them (fgcm's
    #: isolationRadius): their 12 px (2") apertures overlap. 0 disables.
    isolation_radius_arcsec: float = 2.0
    #: Bands that define star positions, in priority order.
    primary_bands: tuple[str, ...] = ("i", "z", "r", "g")
    #: Bands in which a star must have at least min_obs_per_band good observations.
    required_bands: tuple[str, ...] = ()
    #: Minimum observations per band for a star to be used in that band.
    min_obs_per_band: int = 2
    #: Detector whose visit-summary row provides visit-level values (HSC: 40).
    reference_detector: int = 40


@dataclass(frozen=True)
class FitConfig:
    """Fit cycles, cuts and the error model (the JAX fit stage, jaxfgcm.fit)."""

    #: Bands whose observations constrain the fit (default: all bands).
    fit_bands: tuple[str, ...] = ("g", "r", "i", "z", "y")
    #: Cycle driver: stop when no band's reserved-star repeatability improves by this (mag).
    convergence_tolerance: float = 0.005
    #: Maximum number of fit cycles before the clean-up cycle.
    max_fit_cycles: int = 5
    #: Optimizer iterations per fit cycle.
    max_iter: int = 50
    #: Fraction of stars reserved from the fit to measure repeatability.
    reserve_fraction: float = 0.1
    #: Seed of the reserve selection and any other randomness.
    random_seed: int = 12345
    #: Photometric error floor added in quadrature to every observation (mag).
    sigma0_phot: float = 0.003
    #: Cycle 0: keep observations within this of the star's brightest one (mag).
    bright_obs_gray_max: float = 0.15
    #: Cycle 0: exposures with initial gray below this are non-photometric (mag).
    exp_gray_initial_cut: float = -0.25
    #: Initial photometric (low) and high exposure-gray cuts (mag); updated automatically.
    exp_gray_photometric_cut: float = -0.05
    exp_gray_high_cut: float = 0.05
    #: Exposures whose gray variance across detectors exceeds this are non-photometric (mag^2).
    exp_var_gray_photometric_cut: float = 0.0005
    #: Minimum good stars for an exposure, and per detector for a detector gray.
    min_star_per_exp: int = 100
    min_star_per_ccd: int = 5
    #: Minimum photometric exposures on a night for its atmosphere to be fitted.
    min_exp_per_night: int = 3
    #: Fit the precipitable water vapour with a quadratic term in time through the night.
    use_quadratic_pwv: bool = False
    #: Freeze the atmosphere at the standard in cycle 0 (fgcm HSC configs: true).
    freeze_std_atmosphere_cycle0: bool = True
    #: Chebyshev order (in x and y) of the per-detector star flat.
    star_flat_order: int = 1
    #: MJDs that start new star-flat epochs (e.g. camera interventions).
    epoch_mjds: tuple[float, ...] = ()
    #: MJDs of mirror washes/recoatings: each starts a new throughput interval.
    wash_mjds: tuple[float, ...] = ()
    #: Fit a throughput slope in time per band and wash interval (mirror dust), where the
    #: band's exposures in the interval span at least ``throughput_slope_min_days`` (fgcm's
    #: instrumentSlopeMinDeltaT: 5 days in fgcm, 20 in fgcmcal's multi-year HSC runs; a tract
    #: of one month needs the shorter). Without it a slow decline is absorbed night by night by
    #: the atmosphere: on the simulator's tract preset (0.5 mmag/day over 33 days, seed 3) PWV
    #: came out 3-8x the truth on every night, and the y standard magnitudes had a colour trend
    #: of 8 mmag (docs/fit.md). fgcmcal's HSC setting (instrumentParsPerBand): per band.
    fit_throughput_slope: bool = True
    throughput_slope_min_days: float = 5.0
    #: Automatic cut update: sigma multiples for the photometric and high gray cuts.
    auto_photometric_cut_nsig: float = 3.0
    auto_high_cut_nsig: float = 4.0
    #: Solver: "gauss_newton" (fewest passes; holds an n_free x n_obs Jacobian), "lbfgs"
    #: (optax), or "auto" (Gauss-Newton unless the Jacobian would exceed 3e8 elements).
    optimizer: Literal["auto", "gauss_newton", "lbfgs"] = "auto"
    #: Gauss-Newton normal equations: "structured" (from the per-pair columns' tangents and the
    #: per-observation sensitivities, jaxfgcm.fit.normal; the same to 1.5e-9 on the tract
    #: preset, 1.5-2.4x faster) or "generic" (J by forward-mode JVPs through the whole model,
    #: then J J^T).
    gauss_newton_normal: Literal["structured", "generic"] = "structured"
    #: An (exposure, detector) needs this many detectors with a gray in its exposure for the
    #: exposure gray to stand in for its own (fgcm minCcdPerExp).
    min_ccd_per_exp: int = 5
    #: Gray of a non-photometric exposure's detectors from a polynomial over the focal plane
    #: (total degree ``ccd_gray_focal_plane_order``) fitted to its detectors' grays, where
    #: enough detectors have one; else each detector's own mean (fgcm ccdGrayFocalPlane,
    #: fgcmcal's HSC setting; measured in docs/fit.md, "The driver", the zeropoint bullet).
    ccd_gray_focal_plane: bool = True
    ccd_gray_focal_plane_order: int = 1
    #: Fit an aperture correction per band, quadratic in the visits' PSF FWHM.
    fit_aperture_correction: bool = True
    #: One aperture correction per band, each about its band's median FWHM (fgcm's form; else
    #: one quadratic in FWHM shared by all bands about their common median: measured on the
    #: simulator, it leaves 0.13 mmag, and per band it overfits tracts with few exposures per
    #: band).
    aperture_correction_per_band: bool = False
    #: dtype of the per-observation arrays of the fit (magnitude, error, airmass offset,
    #: position): "float32" or "float64". Sums and star means accumulate in float64 either
    #: way. Measured on the simulator's tract preset (seed 77): float32 gives the same flags
    #: and zeropoints within 0.0014 mmag (star magnitudes 0.0013 mmag), 20 bytes less per
    #: observation and a 15 % faster pass.
    observation_dtype: str = "float32"
    #: Factor per band on the colour-based SED slope F' in the chromatic correction (bands not
    #: named: 1). A slope between two band centres is not the SED's slope across one
    #: passband, most of all in g (Balmer jump, metal lines). These are fgcm's HSC production
    #: sedterm constants (obs_subaru: g 1.6, r 0.9). Measured on the simulator's tract preset:
    #: the g zeropoints' per-detector error falls from 2.2 to 0.9 mmag (docs/fit.md).
    sed_slope_scale: dict[str, float] = field(default_factory=lambda: {"g": 1.6, "r": 0.9})


# --------------------------------------------------------------------------------------------
# The whole configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The whole jaxfgcm configuration. Sections are added by the stage that owns them."""

    instrument: InstrumentConfig = InstrumentConfig()
    site: SiteConfig = SiteConfig()
    standard_atmosphere: StandardAtmosphereConfig = StandardAtmosphereConfig()
    lut: LutConfig = LutConfig()
    stars: StarsConfig = StarsConfig()
    fit: FitConfig = FitConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), suitable for YAML/JSON."""
        return _to_plain(self)

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> Config:
        """A copy with ``section.key=value`` overrides applied (values parsed as YAML)."""
        return _from_dict(Config, _merge_overrides(self.to_dict(), overrides), "")

    def physical_filters_of_band(self, band: str) -> list[str]:
        return [f for f, b in self.instrument.physical_filters.items() if b == band]


def default_config_path() -> Path:
    """``configs/hsc.yaml`` of a source checkout (None-safe: may not exist when installed)."""
    return Path(__file__).resolve().parent.parent / "configs" / "hsc.yaml"


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> Config:
    """Load a YAML config (fields not named keep their HSC defaults) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    merged = _merge(Config().to_dict(), data, "", path)
    if overrides:
        merged = _merge_overrides(merged, overrides)
    try:
        return _from_dict(Config, merged, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


# --------------------------------------------------------------------------------------------
# Conversion helpers
# --------------------------------------------------------------------------------------------


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


def _merge(base: dict, new: dict, prefix: str, path: Path | None) -> dict:
    out = dict(base)
    for key, value in new.items():
        name = f"{prefix}{key}"
        if key not in base:
            raise ConfigError((f"{path}: " if path else "") + f"unknown config key '{name}'")
        if isinstance(base[key], dict) and isinstance(value, dict) and _is_section(base[key]):
            out[key] = _merge(base[key], value, name + ".", path)
        else:
            out[key] = value
    return out


def _is_section(d: dict) -> bool:
    # Free-form mappings (physical_filters) are replaced whole; sections are merged key by key.
    return not all(isinstance(v, str) for v in d.values()) or not d


def _merge_overrides(data: dict, overrides: list[str] | dict[str, Any]) -> dict:
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    data = _to_plain(data)
    for key, value in items:
        parts = key.split(".")
        node = data
        for i, p in enumerate(parts[:-1]):
            if not isinstance(node, dict) or p not in node:
                raise ConfigError(f"unknown config key '{'.'.join(parts[: i + 1])}' in override")
            node = node[p]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ConfigError(f"unknown config key '{key}' in override")
        node[parts[-1]] = value
    return data


def _split(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form section.key=value")
    key, raw = item.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from exc


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'")
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(hints[f.name], data[f.name], prefix + f.name)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, (list, tuple)) and tp is GridAxis and len(value) == 3:
            value = dict(zip(("min", "max", "n"), value))
        return _from_dict(tp, value, name + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, name)
            except ConfigError:
                pass
        raise ConfigError(f"'{name}': {value!r} does not match {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{name}' must be a list, got {value!r}")
        (arg, *_) = typing.get_args(tp)
        return tuple(_coerce(arg, v, f"{name}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{name}' must be a mapping, got {value!r}")
        karg, varg = typing.get_args(tp)
        return {_coerce(karg, k, name): _coerce(varg, v, f"{name}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"'{name}' must be one of {', '.join(map(str, choices))}, "
                              f"got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{name}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{name}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{name}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{name}' must be a string, got {value!r}")
        return value
    return value
