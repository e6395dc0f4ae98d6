"""Tests of jaxfgcm.throughput: the passband contract, the HSC-like model, throughput/ files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from jaxfgcm.camera import hsc_like_camera
from jaxfgcm.config import InstrumentConfig
from jaxfgcm.throughput import (
    FilterCurve,
    Throughput,
    ThroughputError,
    hsc_filter_transmission,
    hsc_like_throughput,
    hsc_optics_components,
    hsc_qe,
    read_throughput,
    write_throughput,
)

LAM = np.arange(3000.0, 11000.0 + 1e-9, 5.0)  # the LUT's default grid


@pytest.fixture(scope="module")
def cam():
    return hsc_like_camera()


@pytest.fixture(scope="module")
def tp(cam):
    return hsc_like_throughput(cam)


def _lambda_eff(s):
    return (LAM * s).sum() / s.sum()


def _half_power_edges(lam, t):
    """Blue and red wavelengths where t crosses half its maximum (linear interpolation)."""
    half = 0.5 * t.max()
    i_peak = int(np.argmax(t))
    b = np.flatnonzero(t[:i_peak] < half)[-1]
    r = i_peak + np.flatnonzero(t[i_peak:] < half)[0]
    blue = np.interp(half, t[b : b + 2], lam[b : b + 2])
    red = np.interp(half, t[r - 1 : r + 1][::-1], lam[r - 1 : r + 1][::-1])
    return blue, red


# --- contract ---------------------------------------------------------------------------------


def test_contract_shapes_and_consistency(tp, cam):
    assert set(tp.physical_filters) == set(InstrumentConfig().physical_filters)
    for f in tp.physical_filters:
        all_det = tp.passbands(f, LAM)
        assert all_det.shape == (cam.n_detectors, LAM.size)
        assert np.all((all_det >= 0) & (all_det <= 1))
        np.testing.assert_array_equal(tp.passband(f, 57, LAM), all_det[57])
        np.testing.assert_array_equal(tp.passbands(f, LAM, detectors=[3, 101]), all_det[[3, 101]])
        np.testing.assert_allclose(tp.mean_passband(f, LAM), all_det.mean(axis=0), atol=1e-15)
        # Arbitrary radius: at each detector's centre radius it is that detector's passband.
        at_r = tp.passband_at_radius(f, LAM, cam.centre_radius_mm, cam.ids)
        np.testing.assert_allclose(at_r, all_det, atol=1e-15)
    with pytest.raises(KeyError, match="HSC-U"):
        tp.passbands("HSC-U", LAM)


def test_total_is_product_of_analytic_components(tp, cam):
    """The tabulated model equals optics x QE x filter(centre radius) of the analytic model."""
    comps = hsc_optics_components(LAM)
    optics = comps["m1"] * comps["corrector"] * comps["window"]
    radius = cam.centre_radius_mm
    for f in tp.physical_filters:
        truth = optics * hsc_qe(LAM) * hsc_filter_transmission(f, LAM, radius)
        got = tp.passbands(f, LAM)
        # Tabulation (2 A, 10 mm steps) costs < 3e-3 at the steep edges, < 1e-4 in I0.
        assert np.abs(got - truth).max() < 3e-3
        i0_truth = (truth / LAM).sum(axis=1)
        i0_got = (got / LAM).sum(axis=1)
        assert np.abs(i0_got / i0_truth - 1).max() < 1e-4


def test_no_response_outside_the_filter(tp):
    g = tp.mean_passband("HSC-G", LAM)
    assert g[LAM > 6000].max() < 1e-6 and g[LAM < 3600].max() < 1e-6
    assert tp.optics(np.array([2000.0, 13000.0])).tolist() == [0.0, 0.0]


# --- the HSC-like numbers (physical-inputs.md §1.2; Kawanomoto et al. 2018) ---------------------

PEAKS = {
    "HSC-G": 0.70,
    "HSC-R": 0.68,
    "HSC-R2": 0.74,
    "HSC-I": 0.67,
    "HSC-I2": 0.65,
    "HSC-Z": 0.60,
    "HSC-Y": 0.51,
}
LAMBDA_EFF = {"HSC-G": 4793.0, "HSC-R": 6214.0, "HSC-I": 7671.0, "HSC-Z": 8912.0, "HSC-Y": 9754.0}


@pytest.mark.parametrize("f", list(PEAKS))
def test_focal_plane_average_peak_and_effective_wavelength(tp, f):
    s = tp.mean_passband(f, LAM)
    assert abs(s.max() - PEAKS[f]) < 0.05
    if f in LAMBDA_EFF:
        assert abs(_lambda_eff(s) - LAMBDA_EFF[f]) < 30.0


def test_component_anchor_values():
    # Published component values that the smooth curves go through.
    np.testing.assert_allclose(hsc_qe([3600.0, 6000.0, 9600.0]), [0.285, 0.954, 0.609])
    # Ranges over the wavelengths of the published tables (corrector 3700-12000 A, window
    # 3300-11500 A, M1 3000-12000 A here).
    lam = np.arange(3000.0, 12001.0, 10.0)
    comps = hsc_optics_components(lam)
    assert comps["m1"].min() == pytest.approx(0.852) and comps["m1"].max() <= 0.976
    corr = comps["corrector"][lam >= 3700]
    assert corr.min() == pytest.approx(0.715) and corr.max() == pytest.approx(0.912)
    win = comps["window"][(lam >= 3300) & (lam <= 11500)]
    assert win.min() == pytest.approx(0.90) and win.max() == pytest.approx(0.979)


def test_radial_shift_of_hsc_r_edges(tp):
    """HSC-R half-power edges: 5416/6971 A at the centre, 5488/6988 A at r = 280 mm."""
    lam = np.arange(5000.0, 7500.0, 0.5)
    b0, r0 = _half_power_edges(lam, tp.filter_transmission("HSC-R", lam, 0.0))
    b1, r1 = _half_power_edges(lam, tp.filter_transmission("HSC-R", lam, 280.0))
    assert abs(b0 - 5416) < 2 and abs(r0 - 6971) < 2
    assert abs(b1 - 5488) < 2 and abs(r1 - 6988) < 2
    # Edges move redward monotonically with radius; outer detectors' passbands are redder.
    blues = [
        _half_power_edges(lam, tp.filter_transmission("HSC-R", lam, r))[0]
        for r in (0, 100, 200, 280)
    ]
    assert np.all(np.diff(blues) > 0)
    pb = tp.passbands("HSC-R", LAM)
    lam_eff = (LAM * pb).sum(axis=1) / pb.sum(axis=1)
    order = np.argsort(tp.camera.centre_radius_mm)
    assert lam_eff[order[-1]] - lam_eff[order[0]] > 15.0
    assert np.corrcoef(tp.camera.centre_radius_mm, lam_eff)[0, 1] > 0.95


# --- throughput/ files ------------------------------------------------------------------------


def _assert_same(a: Throughput, b: Throughput):
    assert a.physical_filters == b.physical_filters
    np.testing.assert_array_equal(a.optics_wavelength, b.optics_wavelength)
    np.testing.assert_array_equal(a.optics_transmission, b.optics_transmission)
    assert a.optics_components.keys() == b.optics_components.keys()
    for k in a.optics_components:
        np.testing.assert_array_equal(a.optics_components[k], b.optics_components[k])
    np.testing.assert_array_equal(a.qe_wavelength, b.qe_wavelength)
    np.testing.assert_array_equal(a.qe_values, b.qe_values)
    for f in a.physical_filters:
        for key in ("wavelength", "radius_mm", "transmission"):
            np.testing.assert_array_equal(getattr(a.filters[f], key), getattr(b.filters[f], key))
        np.testing.assert_array_equal(a.passbands(f, LAM), b.passbands(f, LAM))


def test_write_read_round_trip(tp, cam, tmp_path):
    d = tmp_path / "throughput"
    write_throughput(tp, d)
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted(
        ["optics.ecsv", "qe.ecsv"] + [f"filter_{f}.ecsv" for f in tp.physical_filters]
    )
    _assert_same(tp, read_throughput(d, cam))


def test_per_detector_qe_round_trip_and_stale_filters_removed(tp, cam, tmp_path):
    rng = np.random.default_rng(5)
    qe = hsc_qe(tp.qe_wavelength)[None, :] * rng.uniform(0.95, 1.0, (cam.n_detectors, 1))
    two = {f: tp.filters[f] for f in ("HSC-Z", "HSC-G")}
    custom = Throughput(
        cam, tp.optics_wavelength, tp.optics_transmission, tp.qe_wavelength, qe, two
    )
    d = tmp_path / "throughput"
    write_throughput(tp, d)
    write_throughput(custom, d)  # overwrites; the five other filter files go away
    back = read_throughput(d, cam)
    _assert_same(custom, back)
    assert back.physical_filters == ("HSC-Z", "HSC-G")
    ref = tp.passbands("HSC-Z", LAM)[7]
    band = ref > 1e-3
    np.testing.assert_allclose(
        back.passbands("HSC-Z", LAM)[7][band] / ref[band],
        qe[7, 0] / hsc_qe(tp.qe_wavelength)[0],
        rtol=1e-12,
    )


def _write_then(tp, tmp_path, filename, edit):
    d = tmp_path / "throughput"
    write_throughput(tp, d)
    path = d / filename
    edit(path)
    return d, path


def _edit_table(fn):
    def edit(path):
        t = Table.read(path, format="ascii.ecsv")
        t = fn(t) or t
        t.write(path, format="ascii.ecsv", overwrite=True)

    return edit


def _set(col, index, value):
    def fn(t):
        t[col][index] = value

    return fn


@pytest.mark.parametrize(
    "filename, edit, message",
    [
        ("optics.ecsv", lambda p: p.unlink(), "optics file not found"),
        (
            "qe.ecsv",
            lambda p: p.write_text("# %ECSV 1.0\n# ---\nnonsense: [\n"),
            "not a readable ECSV",
        ),
        ("optics.ecsv", _edit_table(lambda t: t.meta.update(format_version=2)), "format_version 2"),
        (
            "optics.ecsv",
            _edit_table(lambda t: t.remove_column("transmission")),
            "missing column 'transmission'",
        ),
        ("optics.ecsv", _edit_table(_set("wavelength", 5, 1.0)), "strictly increasing"),
        ("qe.ecsv", _edit_table(_set("qe", 100, 1.5)), r"outside \[0, 1\]"),
        ("qe.ecsv", _edit_table(_set("qe", 100, np.nan)), "non-finite"),
        (
            "qe.ecsv",
            _edit_table(lambda t: t.rename_column("qe", "det_0")),
            "do not match the camera",
        ),
        (
            "filter_HSC-G.ecsv",
            _edit_table(lambda t: t.meta.update(physical_filter="HSC-R")),
            "does not match the file name",
        ),
        (
            "filter_HSC-G.ecsv",
            _edit_table(lambda t: t.rename_column("r_10.0", "ten")),
            "column 'ten' is not a radius column",
        ),
        (
            "filter_HSC-G.ecsv",
            _edit_table(lambda t: t.rename_column("r_10.0", "r_500.0")),
            "radius columns must be",
        ),
    ],
)
def test_malformed_files_name_file_and_problem(tp, cam, tmp_path, filename, edit, message):
    d, path = _write_then(tp, tmp_path, filename, edit)
    with pytest.raises(ThroughputError, match=message) as err:
        read_throughput(d, cam)
    assert str(path) in str(err.value)


def test_missing_directory_and_filters(cam, tp, tmp_path):
    with pytest.raises(ThroughputError, match="directory not found"):
        read_throughput(tmp_path / "nope", cam)
    d = tmp_path / "throughput"
    write_throughput(tp, d)
    for p in d.glob("filter_*.ecsv"):
        p.unlink()
    with pytest.raises(ThroughputError, match="no filter_"):
        read_throughput(d, cam)


def test_invalid_curves_are_rejected(tp, cam):
    with pytest.raises(ThroughputError, match="radii"):
        FilterCurve(np.array([1.0, 2.0]), np.array([0.0, 0.0]), np.zeros((2, 2)))
    with pytest.raises(ThroughputError, match="per-detector"):
        Throughput(
            cam,
            tp.optics_wavelength,
            tp.optics_transmission,
            tp.qe_wavelength,
            np.zeros((3, tp.qe_wavelength.size)),
            tp.filters,
        )


def test_failed_write_keeps_previous_files(tp, cam, tmp_path, monkeypatch):
    d = tmp_path / "throughput"
    write_throughput(tp, d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    def broken_write(self, where, **kwargs):
        Path(where).write_text("# %ECSV 1.0\n")
        raise OSError("disk full")

    monkeypatch.setattr(Table, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_throughput(tp, d)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
