"""Tests of jaxfgcm.camera: HSC-like layout, pixel <-> focal plane <-> sky, camera.parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord, SkyOffsetFrame

from jaxfgcm.camera import Camera, CameraError, hsc_like_camera, read_camera, write_camera


@pytest.fixture(scope="module")
def cam() -> Camera:
    return hsc_like_camera()


def _random_pixels(cam, n, seed):
    rng = np.random.default_rng(seed)
    det = rng.choice(cam.ids, n)
    x = rng.uniform(-0.49, 2047.49, n)
    y = rng.uniform(-0.49, 4175.49, n)
    return det, x, y


# --- layout -----------------------------------------------------------------------------------


def test_hsc_layout_matches_published_facts(cam):
    assert cam.n_detectors == 104
    np.testing.assert_array_equal(cam.ids, np.arange(104))
    assert np.all(cam.nx == 2048) and np.all(cam.ny == 4176)
    np.testing.assert_allclose(cam.pixel_scale_arcsec, 0.168, rtol=1e-12)
    r = cam.centre_radius_mm
    assert 25.0 < r.min() < 35.0 and 255.0 < r.max() < 266.0
    assert 215.0 < np.abs(cam.x_mm).max() < 226.0
    assert -235.0 < cam.y_mm.min() < -225.0 and 230.0 < cam.y_mm.max() < 240.0
    upright = np.isin(np.mod(cam.yaw_deg, 360.0), [0.0, 180.0])
    assert upright.sum() == 100
    assert not upright[100:].any()  # ids 100-103 are the rotated ones
    assert len(set(cam.names)) == 104


def test_detectors_do_not_overlap_and_lookup_agrees_with_brute_force(cam):
    rng = np.random.default_rng(3)
    fx = rng.uniform(-300, 300, 200_000)
    fy = rng.uniform(-300, 300, 200_000)
    hits = np.zeros(fx.size, int)
    brute = np.full(fx.size, -1)
    for det in cam.ids:  # independent check: every detector's rectangle, one by one
        x, y = cam.pixel(np.full(fx.size, det), fx, fy)
        on = (x >= -0.5) & (x < 2047.5) & (y >= -0.5) & (y < 4175.5)
        hits += on
        brute[on] = det
    assert hits.max() == 1  # no two detectors overlap
    det, x, y = cam.detector_at(fx, fy)
    np.testing.assert_array_equal(det, brute)
    assert np.all(np.isnan(x[det < 0])) and np.all(np.isfinite(x[det >= 0]))
    # The detectors fill ~1.94e5 mm^2 of the focal plane (104 x 30.72 mm x 62.64 mm).
    covered = (det >= 0).mean() * 600.0**2
    assert covered == pytest.approx(104 * 30.72 * 62.64, rel=0.02)


# --- pixel <-> focal plane --------------------------------------------------------------------


def test_focal_plane_geometry(cam):
    # Detector centre pixel is the focal-plane centre; +x pixels run along the yaw direction.
    fx, fy = cam.focal_plane(cam.ids, 1023.5, 2087.5)
    np.testing.assert_allclose(fx, cam.x_mm, atol=1e-12)
    np.testing.assert_allclose(fy, cam.y_mm, atol=1e-12)
    fx1, fy1 = cam.focal_plane(cam.ids, 1024.5, 2087.5)
    yaw = np.deg2rad(cam.yaw_deg)
    np.testing.assert_allclose(fx1 - fx, 0.015 * np.cos(yaw), atol=1e-12)
    np.testing.assert_allclose(fy1 - fy, 0.015 * np.sin(yaw), atol=1e-12)
    r = cam.radius_mm(cam.ids, 1023.5, 2087.5)
    np.testing.assert_allclose(r, cam.centre_radius_mm, atol=1e-12)
    det, x, y = _random_pixels(cam, 10_000, 1)
    x2, y2 = cam.pixel(det, *cam.focal_plane(det, x, y))
    assert np.abs(x2 - x).max() < 1e-9 and np.abs(y2 - y).max() < 1e-9


def test_unknown_detector_id_is_an_error(cam):
    with pytest.raises(CameraError, match="unknown detector"):
        cam.focal_plane([3, 104], [0.0, 0.0], [0.0, 0.0])


# --- sky --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ra0, dec0, rot", [(150.0, 2.2, 0.0), (359.8, -30.0, 37.0), (10.0, 88.9, 250.0)]
)
def test_pixel_sky_pixel_round_trip(cam, ra0, dec0, rot):
    det, x, y = _random_pixels(cam, 50_000, 7)
    ra, dec = cam.pixel_to_sky(det, x, y, ra0, dec0, rot)
    assert np.all((ra >= 0) & (ra < 360))
    det2, x2, y2 = cam.sky_to_pixel(ra, dec, ra0, dec0, rot)
    np.testing.assert_array_equal(det2, det)
    assert np.abs(x2 - x).max() < 1e-6 and np.abs(y2 - y).max() < 1e-6


def test_projection_matches_astropy_offset_frame(cam):
    """Independent gnomonic: tangent-plane (xi, eta) -> a point of astropy's SkyOffsetFrame."""
    ra0, dec0, rot = 210.0, -45.0, 30.0
    det, x, y = _random_pixels(cam, 2000, 11)
    fx, fy = cam.focal_plane(det, x, y)
    scale = np.deg2rad(11.2 / 3600.0)
    r = np.deg2rad(rot)
    # Focal-plane +y at position angle rot (east of north), +x at rot - 90.
    xi = scale * (-fx * np.cos(r) + fy * np.sin(r))
    eta = scale * (fx * np.sin(r) + fy * np.cos(r))
    lon = np.arctan2(xi, 1.0)
    lat = np.arctan2(eta, np.hypot(1.0, xi))
    frame = SkyOffsetFrame(origin=SkyCoord(ra0 * u.deg, dec0 * u.deg))
    truth = SkyCoord(lon * u.rad, lat * u.rad, frame=frame).icrs
    ra, dec = cam.pixel_to_sky(det, x, y, ra0, dec0, rot)
    sep = truth.separation(SkyCoord(ra * u.deg, dec * u.deg)).to_value(u.arcsec)
    assert sep.max() < 1e-6


def test_rotation_convention(cam):
    ra0, dec0 = 40.0, 10.0
    ra, dec = cam.focal_plane_to_sky([0.0, 1.0, 0.0], [0.0, 0.0, 1.0], ra0, dec0, 0.0)
    # rot = 0: +y north, +x west.
    assert dec[2] > dec0 and abs(ra[2] - ra0) < 1e-9
    assert ra[1] < ra0 and abs(dec[1] - dec0) < 1e-6
    ra, dec = cam.focal_plane_to_sky([0.0, 0.0], [0.0, 1.0], ra0, dec0, 90.0)
    # rot = 90: +y east.
    assert ra[1] > ra0 and abs(dec[1] - dec0) < 1e-6


def test_pixel_scale_and_field_size(cam):
    # Pixel scale measured on the sky between neighbouring pixels of the most central CCD.
    i = int(np.argmin(cam.centre_radius_mm))
    ra, dec = cam.pixel_to_sky(
        [i, i, i], [1023.0, 1024.0, 1023.0], [2087.0, 2087.0, 2088.0], 75.0, -20.0, 12.0
    )
    c = SkyCoord(ra * u.deg, dec * u.deg)
    assert c[0].separation(c[1]).to_value(u.arcsec) == pytest.approx(0.168, rel=1e-5)
    assert c[0].separation(c[2]).to_value(u.arcsec) == pytest.approx(0.168, rel=1e-5)
    # Field: the detectors' sky area as an equivalent circle is ~1.5 deg across.
    area_deg2 = (cam.nx * cam.ny * cam.pixel_scale_arcsec**2).sum() / 3600.0**2
    assert 1.45 < 2 * np.sqrt(area_deg2 / np.pi) < 1.65
    corners = cam.corners_mm().reshape(-1, 2)
    ra, dec = cam.focal_plane_to_sky(corners[:, 0], corners[:, 1], 75.0, -20.0, 12.0)
    radius = SkyCoord(ra * u.deg, dec * u.deg).separation(SkyCoord(75 * u.deg, -20 * u.deg))
    assert 0.75 < radius.deg.max() < 0.95


def test_off_detector_points_give_minus_one(cam):
    ra0, dec0, rot = 100.0, 5.0, 0.0
    # In the gap between the two central columns of CCDs, beyond the field, and behind.
    gap_x = 0.5 * (30.72 + 1.13)
    fx = np.array([gap_x, -gap_x, 0.0, 300.0, 0.0])
    fy = np.array([-100.0, 50.0, 290.0, 0.0, -280.0])
    ra, dec = cam.focal_plane_to_sky(fx, fy, ra0, dec0, rot)
    ra = np.append(ra, [ra0 + 180.0, ra0 + 1.2])
    dec = np.append(dec, [-dec0, dec0])
    det, x, y = cam.sky_to_pixel(ra, dec, ra0, dec0, rot)
    np.testing.assert_array_equal(det, -1)
    assert np.all(np.isnan(x)) and np.all(np.isnan(y))


# --- camera.parquet ---------------------------------------------------------------------------


def test_parquet_round_trip(cam, tmp_path):
    path = tmp_path / "camera.parquet"
    write_camera(cam, path)
    assert [p.name for p in tmp_path.iterdir()] == ["camera.parquet"]  # no temp file left
    back = read_camera(path)
    for key in ("ids", "names", "x_mm", "y_mm", "yaw_deg", "nx", "ny", "pixel_size_mm"):
        np.testing.assert_array_equal(getattr(back, key), getattr(cam, key))
    assert back.plate_scale_arcsec_per_mm == cam.plate_scale_arcsec_per_mm


def test_read_keeps_science_detectors_only(cam, tmp_path):
    path = tmp_path / "camera.parquet"
    write_camera(cam, path)
    table = pq.read_table(path)
    flags = np.ones(table.num_rows, bool)
    flags[:4] = False
    table = table.set_column(table.column_names.index("is_science"), "is_science", pa.array(flags))
    pq.write_table(table, path)
    assert read_camera(path).n_detectors == 100


def _rewrite(cam, tmp_path, change):
    path = tmp_path / "camera.parquet"
    write_camera(cam, path)
    pq.write_table(change(pq.read_table(path)), path)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.drop_columns(["x_mm"]), "missing column 'x_mm'"),
        (
            lambda t: t.set_column(t.column_names.index("nx"), "nx", pa.array(["a"] * t.num_rows)),
            "column 'nx' has type",
        ),
        (
            lambda t: t.set_column(0, "id", pa.array(np.zeros(t.num_rows, np.int64))),
            "column 'id' has duplicate",
        ),
        (
            lambda t: t.set_column(
                t.column_names.index("y_mm"), "y_mm", pa.array(np.full(t.num_rows, np.nan))
            ),
            "column 'y_mm'",
        ),
        (
            lambda t: t.set_column(
                t.column_names.index("pixel_size_mm"),
                "pixel_size_mm",
                pa.array(np.zeros(t.num_rows)),
            ),
            "'pixel_size_mm' must be",
        ),
        (lambda t: t.replace_schema_metadata({"format_version": "99"}), "format_version"),
    ],
)
def test_bad_camera_files_name_file_and_column(cam, tmp_path, change, message):
    path = _rewrite(cam, tmp_path, change)
    with pytest.raises(CameraError, match=message) as err:
        read_camera(path)
    assert str(path) in str(err.value)


def test_missing_and_garbage_camera_files(tmp_path):
    with pytest.raises(CameraError, match="not found"):
        read_camera(tmp_path / "nope.parquet")
    bad = tmp_path / "camera.parquet"
    bad.write_text("not parquet")
    with pytest.raises(CameraError, match="not a readable parquet") as err:
        read_camera(bad)
    assert str(bad) in str(err.value)


def test_failed_write_keeps_the_previous_file(cam, tmp_path, monkeypatch):
    path = tmp_path / "camera.parquet"
    write_camera(cam, path)

    def broken_write(table, where, **kwargs):
        Path(where).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        write_camera(cam, path)
    assert [p.name for p in tmp_path.iterdir()] == ["camera.parquet"]
    assert read_camera(path).n_detectors == 104
