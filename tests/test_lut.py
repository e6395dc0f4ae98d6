"""Tests of jaxfgcm.lut: definitions against analytic truth, interpolation against direct
integration through the real atmosphere and passbands, gradients, file round trip, errors, CLI."""

from __future__ import annotations

import dataclasses
import types
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxfgcm.atmosphere import BuiltinAtmosphere
from jaxfgcm.camera import Camera, hsc_like_camera, write_camera
from jaxfgcm.config import Config, load_config
from jaxfgcm.lut import (
    AXIS_NAMES,
    LutFormatError,
    LutInterpolator,
    LutMismatchError,
    build_lut,
    load_lut,
    passband_integrals,
    save_lut,
)
from jaxfgcm.lut.build import config_wavelength
from jaxfgcm.make_lut import main as make_lut_main
from jaxfgcm.throughput import hsc_like_throughput, write_throughput

# ---------------------------------------------------------------------------------------------
# Analytic truth: gray atmosphere, trapezoid-shaped passbands (closed-form integrals)
# ---------------------------------------------------------------------------------------------


class GrayAtmosphere:
    """T = exp(-X k), k linear in the axis coordinates (ln pwv): ln I0 is a product of
    polynomials of degree <= 1 per axis, which the interpolation reproduces exactly."""

    def __init__(self, wavelength):
        self.wavelength = np.asarray(wavelength, np.float64)

    def transmission(self, pressure, pwv, o3, tau, alpha, secz):
        p, w, o, t, a, x = np.broadcast_arrays(pressure, pwv, o3, tau, alpha, secz)
        k = t + 2e-4 * p + 1e-4 * o + 0.01 * np.log(w) + 0.02 * a
        return np.exp(-(x * k))[..., None] * np.ones_like(self.wavelength)


def trapezoid_passband(lam, a, b, ramp):
    """1 between a+ramp and b-ramp, linear ramps to 0 at a and b."""
    return np.clip(np.minimum((lam - a) / ramp, (b - lam) / ramp), 0.0, 1.0)


def trapezoid_moments(a, b, ramp):
    """Exact int S dlambda/lambda and int S dlambda of trapezoid_passband."""
    def ramp_up(lo, hi):  # int (l - lo)/ramp / l dl over [lo, hi]
        return ((hi - lo) - lo * np.log(hi / lo)) / ramp

    def ramp_down(lo, hi):  # int (hi - l)/ramp / l dl over [lo, hi]
        return (hi * np.log(hi / lo) - (hi - lo)) / ramp

    m0 = ramp_up(a, a + ramp) + np.log((b - ramp) / (a + ramp)) + ramp_down(b - ramp, b)
    m1 = (b - a) - ramp  # area
    return m0, m1


class TrapezoidThroughput:
    """Duck-typed Throughput: detector d shifts both edges of every filter by 5 d Angstrom."""

    edges: typing.ClassVar[dict[str, tuple[int, int]]] = {"HSC-G": (4000, 5500), "HSC-R": (5400, 7000), "HSC-R2": (5450, 7050),
             "HSC-I": (6900, 8500), "HSC-I2": (6950, 8600), "HSC-Z": (8500, 9300),
             "HSC-Y": (9300, 10600)}
    ramp = 100.0

    def __init__(self, ids):
        self.ids = np.asarray(ids)
        self.physical_filters = tuple(self.edges)

    def shifted(self, f, det):
        a, b = self.edges[f]
        return a + 5.0 * det, b + 5.0 * det

    def passbands(self, f, lam, detectors=None):
        det = self.ids if detectors is None else np.asarray(detectors)
        return np.stack([trapezoid_passband(lam, *self.shifted(f, d), self.ramp) for d in det])

    def mean_passband(self, f, lam):
        return self.passbands(f, lam).mean(axis=0)


def test_definitions_against_closed_form():
    cfg = Config().with_overrides({
        "lut.pressure": [590, 640, 2], "lut.pwv": [0.5, 5, 4], "lut.o3": [200, 400, 2],
        "lut.tau": [0.01, 0.3, 4], "lut.alpha": [0, 2, 4], "lut.secz": [1, 2.5, 4],
    })
    ids = np.array([0, 3, 8])
    tp = TrapezoidThroughput(ids)
    atm = GrayAtmosphere(config_wavelength(cfg.lut))
    lut = build_lut(cfg, tp, types.SimpleNamespace(ids=ids), atm, progress=False)

    # lambda_b (no atmosphere) and lambda_std (gray standard atmosphere) are both the mean
    # wavelength int S dl / int S dl/l of the mean passband; the gray atmosphere cancels.
    for i, f in enumerate(lut.physical_filters):
        m = [trapezoid_moments(*tp.shifted(f, d), tp.ramp) for d in ids]
        lam_b = sum(x[1] for x in m) / sum(x[0] for x in m)
        assert lut.lambda_b[i] == pytest.approx(lam_b, rel=1e-6)
        assert lut.lambda_std_filter[i] == pytest.approx(lam_b, rel=1e-6)
    # lambda_std of a filter is that of its band's standard filter (HSC-R -> HSC-R2).
    r, r2 = lut.filter_index("HSC-R"), lut.filter_index("HSC-R2")
    assert lut.lambda_std[r] == lut.lambda_std_filter[r2] != lut.lambda_std_filter[r]
    assert lut.std_filter_index("HSC-R") == r2
    # I10_std of a standard filter is zero by construction; of HSC-R it is the mean-wavelength
    # difference between HSC-R and HSC-R2.
    assert abs(lut.i10_std[r2]) < 1e-6
    assert lut.i10_std[r] == pytest.approx(lut.lambda_std_filter[r] - lut.lambda_std[r], abs=1e-6)

    # I0 per detector at random points: closed form x gray transmission; I10 = lambda_b(det) -
    # lambda_std, independent of the atmosphere (gray).
    rng = np.random.default_rng(0)
    pars = {a: rng.uniform(getattr(cfg.lut, a).min, getattr(cfg.lut, a).max, 50)
            for a in AXIS_NAMES}
    gray = atm.transmission(**pars)[:, 0]
    interp = LutInterpolator.from_lut(lut)
    for i, f in enumerate(lut.physical_filters):
        for slot, d in enumerate(ids):
            m0, m1 = trapezoid_moments(*tp.shifted(f, d), tp.ramp)
            i0, i10 = interp.interp(i, slot, *[pars[a] for a in AXIS_NAMES])
            np.testing.assert_allclose(np.asarray(i0), m0 * gray, rtol=2e-6)
            np.testing.assert_allclose(np.asarray(i10), m1 / m0 - lut.lambda_std[i], atol=1e-3)
    assert lut.i0_std[0] == pytest.approx(
        np.mean([trapezoid_moments(*tp.shifted("HSC-G", d), tp.ramp)[0] for d in ids])
        * atm.transmission(616.0, 1.5, 263.0, 0.03, 1.0, 1.1)[0], rel=1e-6)


# ---------------------------------------------------------------------------------------------
# The real atmosphere and HSC-like passbands, default grid
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hsc():
    camera = hsc_like_camera()
    throughput = hsc_like_throughput(camera)
    # Three detectors spanning the focal plane (centre, mid radius, edge): the passbands vary
    # with radius only, so these bracket all detectors.
    order = np.argsort(camera.centre_radius_mm)
    ids = camera.ids[order[[0, order.size // 2, -1]]]
    sub = _sub_camera(camera, ids)
    config = Config()
    atm = BuiltinAtmosphere(config_wavelength(config.lut), config.lut.aerosol_lambda_norm)
    lut = build_lut(config, throughput, sub, atm, progress=False)
    interp = LutInterpolator.from_lut(lut)
    jitted = jax.jit(lambda it, *args: it.interp(*args))
    return types.SimpleNamespace(config=config, camera=sub, throughput=throughput, atm=atm,
                                 lut=lut, interp=interp, ev=lambda *args: jitted(interp, *args))


def _sub_camera(camera, ids):
    idx = camera.index(ids)
    return Camera(
        ids=camera.ids[idx], names=camera.names[idx], x_mm=camera.x_mm[idx],
        y_mm=camera.y_mm[idx], yaw_deg=camera.yaw_deg[idx], nx=camera.nx[idx],
        ny=camera.ny[idx], pixel_size_mm=camera.pixel_size_mm[idx],
        plate_scale_arcsec_per_mm=camera.plate_scale_arcsec_per_mm,
    )


def _direct(h, fi, slot, pars):
    lut = h.lut
    f = lut.physical_filters[fi]
    if slot == lut.mean_detector_index:
        pb = h.throughput.mean_passband(f, lut.wavelength)[None]
    else:
        pb = h.throughput.passbands(f, lut.wavelength, [lut.detector_ids[slot]])
    trans = h.atm.transmission(**pars)
    i0, i10 = passband_integrals(trans, pb, lut.wavelength, [lut.lambda_std[fi]])
    return i0[..., 0], i10[..., 0]


def test_interpolation_accuracy_default_grid(hsc):
    """>= 200 random off-grid points over the whole grid range, every filter, 4 slots."""
    grid = hsc.config.lut
    assert [a.n for a in hsc.lut.axes] == [getattr(grid, a).n for a in AXIS_NAMES]
    rng = np.random.default_rng(42)
    pars = {a: rng.uniform(getattr(grid, a).min, getattr(grid, a).max, 250) for a in AXIS_NAMES}
    # Include the extreme corner (largest aerosol, airmass and water) explicitly.
    for a in AXIS_NAMES:
        pars[a][0] = getattr(grid, a).max
    err0, err10 = [], []
    for fi in range(len(hsc.lut.physical_filters)):
        for slot in range(hsc.lut.i0.shape[1]):
            i0, i10 = _direct(hsc, fi, slot, pars)
            a0, a10 = hsc.ev(fi, slot, *[pars[a] for a in AXIS_NAMES])
            err0.append(np.asarray(a0, np.float64) / i0 - 1)
            err10.append(np.asarray(a10, np.float64) - i10)
    err0, err10 = np.concatenate(err0), np.concatenate(err10)
    # Bars: I0 to 5e-4 relative (0.5 mmag); I10 to 0.2 A (chromatic term < 0.2 mmag for
    # |F'| <= 1e-3 /A, docs/lut.md). Measured: 2e-4 and 0.1 A.
    assert np.abs(err0).max() <= 5e-4
    assert np.abs(err10).max() <= 0.2
    assert np.sqrt(np.mean(err0**2)) <= 1.5e-4


def test_nodes_reproduce_direct_integrals(hsc):
    lut = hsc.lut
    rng = np.random.default_rng(1)
    k = [rng.integers(0, a.n, 30) for a in lut.axes]
    pars = {a.name: a.nodes[kk] for a, kk in zip(lut.axes, k)}
    for fi in (0, 6):
        i0, i10 = _direct(hsc, fi, 1, pars)
        a0, a10 = hsc.ev(fi, 1, *[pars[a] for a in AXIS_NAMES])
        np.testing.assert_allclose(np.asarray(a0), i0, rtol=2e-6)
        np.testing.assert_allclose(np.asarray(a10), i10, atol=2e-4)
        np.testing.assert_allclose(lut.i0[(fi, 1, *k)], i0, rtol=2e-6)


def test_standard_values_consistent(hsc):
    lut, std = hsc.lut, hsc.lut.std_atmosphere
    np.testing.assert_allclose(lut.std_transmission, hsc.atm.transmission(**std), rtol=1e-12)
    for fi, f in enumerate(lut.physical_filters):
        mean = hsc.throughput.mean_passband(f, lut.wavelength)
        i0, i10 = passband_integrals(lut.std_transmission, mean[None], lut.wavelength,
                                     [lut.lambda_std[fi]])
        assert lut.i0_std[fi] == pytest.approx(i0[0], rel=1e-10)
        assert lut.i10_std[fi] == pytest.approx(i10[0], abs=1e-8)
        # The table at the standard atmosphere (mean slot) agrees within interpolation error.
        a0, a10 = hsc.ev(fi, lut.mean_detector_index, *[std[a] for a in AXIS_NAMES])
        assert float(a0) == pytest.approx(lut.i0_std[fi], rel=5e-4)
        assert float(a10) == pytest.approx(lut.i10_std[fi], abs=0.2)
        sf = lut.std_filter_index(f)
        assert lut.lambda_std[fi] == lut.lambda_std_filter[sf]
        assert lut.lambda_b[fi] > 3000
    for sf in {lut.std_filter_index(f) for f in lut.physical_filters}:
        assert abs(lut.i10_std[sf]) < 1e-8  # a standard filter is centred on its own lambda_std


def test_gradients(hsc):
    """jax.grad vs central finite differences of the interpolator, and vs the physics."""
    interp = hsc.interp
    point = {"pressure": 612.3, "pwv": 2.7, "o3": 291.0, "tau": 0.083, "alpha": 1.37,
             "secz": 1.64}
    steps = {"pressure": 0.5, "pwv": 0.01, "o3": 1.0, "tau": 1e-3, "alpha": 0.01, "secz": 0.01}

    @jax.jit
    def values(args, fi):
        i0, i10 = interp.interp(fi, 0, *args)
        return jnp.stack([jnp.log(i0), i10])

    def f(args, fi, which):
        return values(args, fi)[which]

    jac = jax.jit(jax.jacobian(values))

    with jax.enable_x64(True):
        args = [jnp.float64(point[a]) for a in AXIS_NAMES]
        for fi in (0, 3, 6):
            for which in (0, 1):
                grad = [g[which] for g in jac(args, fi)]
                for k, a in enumerate(AXIS_NAMES):
                    h = 1e-4 * steps[a]
                    up = list(args)
                    dn = list(args)
                    up[k] = up[k] + h
                    dn[k] = dn[k] - h
                    fd = (f(up, fi, which) - f(dn, fi, which)) / (2 * h)
                    assert float(grad[k]) == pytest.approx(float(fd), rel=1e-4, abs=1e-9), (a,)
                # Against the physics: derivative of the directly integrated quantity.
                for k, a in enumerate(AXIS_NAMES):
                    up, dn = dict(point), dict(point)
                    up[a] += steps[a]
                    dn[a] -= steps[a]
                    t_up, t_dn = _direct(hsc, fi, 0, up), _direct(hsc, fi, 0, dn)
                    q_up = np.log(t_up[0]) if which == 0 else t_up[1]
                    q_dn = np.log(t_dn[0]) if which == 0 else t_dn[1]
                    true = (q_up - q_dn) / (2 * steps[a])
                    # 10% of the derivative, or an error that moves ln I0 by < 5e-4 (I10 by
                    # < 0.2 A, the value bars) over the whole axis range, whichever is larger.
                    g = getattr(hsc.config.lut, a)
                    floor = (5e-4 if which == 0 else 0.2) / (g.max - g.min)
                    assert abs(float(grad[k]) - true) <= max(0.1 * abs(true), floor), (
                        fi, which, a, float(grad[k]), true)
        # jit, broadcasting and dtypes
        jitted = jax.jit(lambda it, *a: it.interp(*a))
        secz = jnp.linspace(1.0, 2.0, 4)[None, :]
        pwv = jnp.array([[0.5], [1.0], [4.0]])
        i0, i10 = jitted(interp, 2, 1, 600.0, pwv, 300.0, 0.05, 1.0, secz)
        assert i0.shape == i10.shape == (3, 4) and i0.dtype == jnp.float64
        e0, _ = interp.interp(2, 1, 600.0, pwv[2, 0], 300.0, 0.05, 1.0, secz[0, 3])
        assert float(i0[2, 3]) == pytest.approx(float(e0), rel=1e-12)
    i0, _ = interp.interp(np.zeros(5, int), 0, 600.0, 1.0, 300.0, 0.05, 1.0, 1.2)
    assert i0.shape == (5,) and i0.dtype == jnp.float32


def test_clamped_outside_grid(hsc):
    interp, g = hsc.interp, hsc.config.lut
    inside = interp.interp(1, 0, g.pressure.max, g.pwv.min, 300.0, g.tau.max, 1.0, g.secz.max)
    outside = interp.interp(1, 0, 700.0, 0.01, 300.0, 0.9, 1.0, 4.0)
    np.testing.assert_allclose(np.asarray(outside), np.asarray(inside), rtol=0, atol=0)
    grad = jax.grad(lambda s: interp.interp(1, 0, 600.0, 1.0, 300.0, 0.05, 1.0, s)[0])(4.0)
    assert float(grad) == 0.0


# ---------------------------------------------------------------------------------------------
# File round trip and errors
# ---------------------------------------------------------------------------------------------


def test_save_load_round_trip(hsc, tmp_path):
    path = tmp_path / "fgcmLookupTable.fits"
    save_lut(hsc.lut, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    lut = load_lut(path, config=hsc.config, camera=hsc.camera)
    a, b = hsc.lut, lut
    assert (a.physical_filters, a.bands, a.std_filters) == (b.physical_filters, b.bands,
                                                            b.std_filters)
    np.testing.assert_array_equal(a.detector_ids, b.detector_ids)
    for name in ("i0", "i10", "i0_std", "i10_std", "i2_std", "lambda_std", "lambda_std_filter",
                 "lambda_b", "wavelength", "std_transmission"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for x, y in zip(a.axes, b.axes):
        assert (x.name, x.coordinate, x.cubic) == (y.name, y.coordinate, y.cubic)
        np.testing.assert_array_equal(x.nodes, y.nodes)
    assert a.std_atmosphere == b.std_atmosphere and b.format_version == a.format_version
    args = (3, 2, 600.0, 1.0, 300.0, 0.05, 1.0, 1.3)
    np.testing.assert_array_equal(np.asarray(LutInterpolator.from_lut(b).interp(*args)),
                                  np.asarray(hsc.interp.interp(*args)))


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_mismatch_and_corrupt_files(hsc, tmp_path):
    path = tmp_path / "lut.fits"
    save_lut(hsc.lut, path)
    cases = [
        (["lut.pwv=[0.1, 10.0, 9]"], r"lut\.pwv"),
        (["standard_atmosphere.pressure=700.0"], r"standard_atmosphere\.pressure"),
        (["lut.wavelength_step=10.0"], "wavelength grid"),
        (["instrument.physical_filters={HSC-G: g, HSC-R: r}"], "physical filters"),
    ]
    for overrides, pattern in cases:
        cfg = load_config(overrides=overrides)
        with pytest.raises(LutMismatchError, match=pattern) as err:
            load_lut(path, config=cfg)
        assert str(path) in str(err.value)
    with pytest.raises(LutMismatchError, match="detector ids"):
        load_lut(path, camera=hsc_like_camera())

    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"this is not a FITS file" * 100)
    with pytest.raises(LutFormatError, match="garbage.fits"):
        load_lut(garbage)
    from astropy.io import fits

    foreign = tmp_path / "foreign.fits"
    fits.PrimaryHDU(np.zeros(3)).writeto(foreign)
    with pytest.raises(LutFormatError, match=r"foreign.fits.*not a jaxfgcm look-up table"):
        load_lut(foreign)
    with pytest.raises(LutFormatError, match="not found"):
        load_lut(tmp_path / "missing.fits")
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(path.read_bytes()[: 200_000])
    with pytest.raises(LutFormatError, match="truncated.fits"):
        load_lut(truncated)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_make_lut_cli(hsc, tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    write_camera(hsc.camera, repo / "camera.parquet")
    write_throughput(hsc_like_throughput(hsc.camera), repo / "throughput")
    small = ["lut.wavelength_step=20.0", "lut.pwv=[0.5, 5.0, 4]", "lut.tau=[0.01, 0.2, 4]",
             "lut.alpha=[0.0, 2.0, 4]", "lut.secz=[1.0, 2.0, 4]"]
    args = ["--repo", str(repo), "--quiet"] + [x for s in small for x in ("--set", s)]
    assert make_lut_main(args) == 0
    lut = load_lut(repo / "fgcmLookupTable.fits", config=load_config(overrides=small),
                   camera=hsc.camera)
    assert lut.i0.shape == (7, 4, 2, 4, 2, 4, 4, 4)

    with pytest.raises(SystemExit) as exit_info:
        make_lut_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--repo" in out and "--set" in out and "--output" in out

    assert make_lut_main(["--repo", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert "nope" in err and len(err.splitlines()) == 1
    (repo / "camera.parquet").unlink()
    assert make_lut_main(["--repo", str(repo)]) == 1
    assert "camera.parquet" in capsys.readouterr().err
    write_camera(hsc.camera, repo / "camera.parquet")
    for p in (repo / "throughput").iterdir():
        p.unlink()
    (repo / "throughput").rmdir()
    assert make_lut_main(["--repo", str(repo)]) == 1
    assert "throughput" in capsys.readouterr().err


def test_config_grid_is_consistent_with_lut_defaults():
    # The default node counts are what docs/lut.md measured; a cubic axis needs >= 4 nodes.
    cfg = dataclasses.replace(Config().lut)
    for a in ("pwv", "tau", "alpha", "secz"):
        assert getattr(cfg, a).n >= 4
