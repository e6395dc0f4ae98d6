"""Benchmark the camera's sky projection and detector lookup (prints figures; no assertions).

Usage: python scripts/bench_camera.py [n_points]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from jaxfgcm.camera import hsc_like_camera
from jaxfgcm.throughput import hsc_like_throughput


def main(n: int = 1_000_000) -> None:
    cam = hsc_like_camera()
    rng = np.random.default_rng(0)
    det = rng.choice(cam.ids, n)
    x = rng.uniform(-0.5, 2047.5, n)
    y = rng.uniform(-0.5, 4175.5, n)
    cam.sky_to_pixel(np.array([150.0]), np.array([2.0]), 150.0, 2.0, 30.0)  # build lookup grid
    t0 = time.perf_counter()
    ra, dec = cam.pixel_to_sky(det, x, y, 150.0, 2.0, 30.0)
    t1 = time.perf_counter()
    det2, x2, y2 = cam.sky_to_pixel(ra, dec, 150.0, 2.0, 30.0)
    t2 = time.perf_counter()
    err = max(np.abs(x2 - x).max(), np.abs(y2 - y).max())
    print(f"pixel_to_sky  {n:>9d} points: {t1 - t0:.3f} s")
    print(
        f"sky_to_pixel  {n:>9d} points: {t2 - t1:.3f} s  (same detector: "
        f"{np.mean(det2 == det):.6f}, max round-trip error {err:.2e} px)"
    )
    tp = hsc_like_throughput(cam)
    lam = np.arange(3000.0, 11000.0 + 1e-9, 5.0)
    t3 = time.perf_counter()
    for f in tp.physical_filters:
        tp.passbands(f, lam)
    t4 = time.perf_counter()
    print(
        f"passbands     7 filters x {cam.n_detectors} detectors x {lam.size} wavelengths: "
        f"{t4 - t3:.3f} s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
