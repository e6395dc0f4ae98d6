"""Compare the products of two calibrations of one tract (e.g. the same run on CPU and GPU).

    python scripts/compare_runs.py OUT_A OUT_B [--tolerance-mmag 0.01]

Prints, per band, the largest and RMS difference of the zeropoints (rows calibrated in both
runs), the calibration flags that differ, and the largest and RMS difference of the standard
stars' magnitudes; exits 1 when a difference exceeds the tolerance or a flag differs. OUT_A and
OUT_B are output directories of ``python -m jaxfgcm.calibrate`` (both complete: their
summary.json says so).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def _load(out: Path):
    summary = json.loads((out / "summary.json").read_text())
    if summary.get("status") != "complete":
        raise SystemExit(f"{out}: summary.json does not say the run is complete")
    pc = pq.read_table(out / "fgcm_photoCalib_tract.parquet").to_pydict()
    stars = pq.read_table(out / "fgcm_stars.parquet")
    return summary, pc, stars


def compare(a: Path, b: Path, tol_mmag: float) -> bool:
    sa, pa_, ta = _load(a)
    sb, pb, tb = _load(b)
    ok = True
    key_a = {(v, d): i for i, (v, d) in enumerate(zip(pa_["visit"], pa_["detector"]))}
    rows = [(i, key_a[(v, d)]) for i, (v, d) in enumerate(zip(pb["visit"], pb["detector"]))
            if (v, d) in key_a]
    if len(rows) != len(pa_["visit"]) or len(rows) != len(pb["visit"]):
        print(f"photoCalib rows: {len(pa_['visit'])} vs {len(pb['visit'])}, {len(rows)} shared")
        ok = False
    ib, ia = (np.array(x) for x in zip(*rows))
    band = np.array(pa_["band"])[ia]
    flag_a, flag_b = np.array(pa_["flag"])[ia], np.array(pb["flag"])[ib]
    zp_a, zp_b = np.array(pa_["zeropoint"])[ia], np.array(pb["zeropoint"])[ib]
    print(f"{'band':5s} {'rows':>6s} {'flags differ':>13s} {'ZP max mmag':>12s} "
          f"{'ZP rms mmag':>12s} {'ZP offset':>10s} {'rel max':>9s} {'stars':>6s} {'mag max mmag':>13s} {'mag rms mmag':>13s}")
    bands = sorted(set(band))
    for bnd in bands:
        m = band == bnd
        nflag = int(np.sum(flag_a[m] != flag_b[m]))
        both = m & np.isfinite(zp_a) & np.isfinite(zp_b)
        dz = 1e3 * (zp_a[both] - zp_b[both])
        col = f"mag_{bnd}"
        if col in ta.column_names and col in tb.column_names:
            ma = ta.column(col).to_numpy(zero_copy_only=False)
            mb = tb.column(col).to_numpy(zero_copy_only=False)
            if len(ma) != len(mb):
                print(f"{bnd}: {len(ma)} vs {len(mb)} stars")
                ok = False
                ma = mb = np.zeros(0)
            fin = np.isfinite(ma) & np.isfinite(mb)
            dm = 1e3 * (ma[fin] - mb[fin])
            if np.any(np.isfinite(ma) != np.isfinite(mb)):
                print(f"{bnd}: {int(np.sum(np.isfinite(ma) != np.isfinite(mb)))} stars measured "
                      "in one run only")
                ok = False
        else:
            dm = np.zeros(0)
        zmax = float(np.max(np.abs(dz))) if dz.size else 0.0
        # The fit leaves each band's overall offset loosely fixed (a zeropoint shift that the
        # star magnitudes absorb): the relative calibration is the difference after removing it.
        offset = float(np.mean(dz)) if dz.size else 0.0
        rel = float(np.max(np.abs(dz - offset))) if dz.size else 0.0
        mmax = float(np.max(np.abs(dm))) if dm.size else 0.0
        print(f"{bnd:5s} {int(m.sum()):6d} {nflag:13d} {zmax:12.2e} "
              f"{float(np.sqrt(np.mean(dz ** 2))) if dz.size else 0.0:12.2e} {offset:10.2e} "
              f"{rel:9.2e} {dm.size:6d} "
              f"{mmax:13.2e} {float(np.sqrt(np.mean(dm ** 2))) if dm.size else 0.0:13.2e}")
        ok &= nflag == 0 and zmax <= tol_mmag and mmax <= tol_mmag
    ca, cb = sa.get("cycles", {}), sb.get("cycles", {})
    print(f"fit cycles: {ca.get('n_cycles')} vs {cb.get('n_cycles')}; devices: "
          f"{sa.get('device')} vs {sb.get('device')}")
    print(f"{'AGREE' if ok else 'DIFFER'} (tolerance {tol_mmag} mmag, flags identical)")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_a", type=Path)
    ap.add_argument("out_b", type=Path)
    ap.add_argument("--tolerance-mmag", type=float, default=0.01)
    a = ap.parse_args(argv)
    return 0 if compare(a.out_a, a.out_b, a.tolerance_mmag) else 1


if __name__ == "__main__":
    sys.exit(main())
