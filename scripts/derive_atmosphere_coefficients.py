#!/usr/bin/env python
"""Derive the built-in atmosphere model's coefficients from fgcm's MODTRAN test table.

Reads ``fgcm_atm_subaru2_test.fits`` (erykoff/fgcm, Apache-2.0; MODTRAN, Maunakea) and writes
``jaxfgcm/data/atmosphere_coefficients.npz`` (atomically):

* O3: vertical optical depth per Dobson unit per wavelength, and one effective ozone-layer height
  for the ozone airmass, from the O3ATM table (3 O3 columns x 3 sec z);
* H2O: curve-of-growth coefficients a, c of tau = a u / sqrt(1 + c u), u = pwv * sec z, from the
  two valid PWV rows of PWVATM (6 values of u from 0.1 to 17.5 mm);
* O2: the same law with u = sec z * P / PMBELEVATION, from O2ATM (3 sec z).

Usage::

    python scripts/derive_atmosphere_coefficients.py               # derive and write
    python scripts/derive_atmosphere_coefficients.py --validate    # EW table, model vs MODTRAN
    python scripts/derive_atmosphere_coefficients.py --benchmark   # time 30,000 x 1601

The table is found with --table, else $JAXFGCM_SHARED/reference/, else ../shared/reference/
relative to the repository root.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares, minimize_scalar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jaxfgcm.atmosphere import (
    AtmosphereCoefficients,
    BuiltinAtmosphere,
    compare_equivalent_widths,
    format_equivalent_width_table,
    ozone_airmass,
    read_fgcm_atmosphere_table,
)

TABLE_NAME = "fgcm_atm_subaru2_test.fits"
OUTPUT = REPO / "jaxfgcm" / "data" / "atmosphere_coefficients.npz"
EARTH_RADIUS_KM = 6371.0
SOURCE = (
    "Derived by scripts/derive_atmosphere_coefficients.py from fgcm_atm_subaru2_test.fits "
    "(erykoff/fgcm, fgcm/data/tables/; MODTRAN, Maunakea 4139 m, PMBELEVATION 605.318 mbar; "
    "Copyright the fgcm authors, Apache License 2.0, "
    "https://www.apache.org/licenses/LICENSE-2.0)"
)


def default_table_path() -> Path:
    shared = os.environ.get("JAXFGCM_SHARED")
    if shared and (Path(shared) / TABLE_NAME).is_file():
        return Path(shared) / TABLE_NAME  # JAXFGCM_SHARED may name shared/reference itself
    base = Path(shared) if shared else REPO.parent / "shared"
    return base / "reference" / TABLE_NAME


def fit_ozone(table):
    """Per-wavelength tau per DU and one layer height, weighted least squares in T."""
    cols = table.o3_nodes[:, None]  # (n_o3, 1) DU
    t_obs = table.o3_table  # (n_o3, n_z, n_l)
    usable = t_obs > 1e-6  # saturated Hartley-band bins carry no information
    tau_obs = -np.log(np.where(usable, t_obs, 1.0))
    # An error dT in transmission is T dtau in optical depth: weight T^2 fits in T space.
    weight = np.where(usable, t_obs, 0.0) ** 2

    def solve(height_km):
        x = ozone_airmass(table.secz_nodes, height_km, EARTH_RADIUS_KM)[None, :, None]
        m = cols[:, :, None] * x  # DU x airmass, (n_o3, n_z, 1)
        k = (weight * tau_obs * m).sum((0, 1)) / np.maximum((weight * m * m).sum((0, 1)), 1e-300)
        resid = (weight * (tau_obs - k * m) ** 2).sum()
        return k, resid

    best = minimize_scalar(lambda h: solve(h)[1], bounds=(0.0, 60.0), method="bounded")
    k, _ = solve(best.x)
    return np.maximum(k, 0.0), float(best.x)


def fit_curve_of_growth(u, t_obs):
    """Per wavelength a, c >= 0 of T = exp(-a u / sqrt(1 + c u)); u (n,), t_obs (n, n_l).

    Residuals are in transmission relative to the absorption depth (1 - T + 1e-3): an unweighted
    fit is dominated by the largest columns and misses the weak-absorption end by ~8 % in EW,
    the relative weighting holds every node to ~1 % (docs/atmosphere.md).
    """
    n_l = t_obs.shape[1]
    a = np.zeros(n_l)
    c = np.zeros(n_l)
    for i in range(n_l):
        t = t_obs[:, i]
        if np.all(t >= 1.0 - 1e-7):
            continue  # no absorption in this bin
        tau = -np.log(np.clip(t, 1e-12, 1.0))
        a0 = max(float(np.sum(tau * u) / np.sum(u * u)), 1e-12)
        weight = 1.0 / (1.0 - t + 1e-3)

        def resid(p, t=t, weight=weight):
            return (np.exp(-p[0] * u / np.sqrt(1.0 + p[1] * u)) - t) * weight

        sol = least_squares(
            resid, [a0, 0.1], bounds=([0.0, 0.0], [np.inf, np.inf]), x_scale=[a0, 1.0]
        )
        a[i], c[i] = sol.x
    return a, c


def derive(table, secz_mask=None) -> AtmosphereCoefficients:
    """Fit all coefficients; ``secz_mask`` selects the sec z nodes used (hold-out checks)."""
    z = np.ones(table.secz_nodes.size, bool) if secz_mask is None else np.asarray(secz_mask)
    secz = table.secz_nodes[z]
    k_o3, height = fit_ozone(table)
    u_h2o = (table.pwv_nodes[:, None] * secz[None, :]).ravel()
    h2o_a, h2o_c = fit_curve_of_growth(u_h2o, table.h2o_table[:, z].reshape(u_h2o.size, -1))
    # The table's O2 is at its site pressure: u = sec z there.
    o2_a, o2_c = fit_curve_of_growth(secz, table.o2_table[z])
    return AtmosphereCoefficients(
        wavelength=table.wavelength.copy(),
        o3_tau_per_du=k_o3,
        o3_layer_height_km=height,
        earth_radius_km=EARTH_RADIUS_KM,
        h2o_a=h2o_a,
        h2o_c=h2o_c,
        o2_a=o2_a,
        o2_c=o2_c,
        o2_reference_pressure=table.pressure_elevation,
        source=SOURCE,
    )


def write_coefficients(coeffs: AtmosphereCoefficients, path: Path) -> None:
    """Write the npz atomically (temporary file in the same directory, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(getattr(coeffs, k)) for k in coeffs.__dataclass_fields__}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the file ships with the package
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def validate(table) -> None:
    model = BuiltinAtmosphere(wavelength=table.wavelength, lambda_norm=table.lambda_norm)
    rows = compare_equivalent_widths(table, model)
    print(
        "Built-in model vs MODTRAN (fgcm_atm_subaru2_test.fits), P = PMBELEVATION "
        f"{table.pressure_elevation:.1f} mbar, EW = integral (1 - T) dlambda:\n"
    )
    print(format_equivalent_width_table(rows))
    worst = max(abs(r[-1]) for r in rows)
    print(f"\nlargest |difference|: {worst:.2f} %")
    # Out-of-sample check: fit H2O/O2 without the sec z = 2.92 node, predict it.
    held = table.secz_nodes <= 1.0 + 1e-9
    held |= table.secz_nodes > 3.0
    coeffs = derive(table, secz_mask=held)
    holdout = BuiltinAtmosphere(table.wavelength, table.lambda_norm, coefficients=coeffs)
    x_mid = [float(table.secz_nodes[~held][0])]
    rows = [
        r for r in compare_equivalent_widths(table, holdout, secz=x_mid) if r[0] in ("h2o", "o2")
    ]
    print(
        "\nHold-out: H2O and O2 fitted on sec z = 1 and 4.85 only, predicted at sec z = "
        f"{x_mid[0]:.4f}:\n"
    )
    print(format_equivalent_width_table(rows))


def benchmark(n: int = 30_000) -> None:
    model = BuiltinAtmosphere()
    rng = np.random.default_rng(1)
    par = {
        "pressure": rng.uniform(590, 640, n),
        "pwv": rng.uniform(0.1, 10, n),
        "o3": rng.uniform(200, 400, n),
        "tau": rng.uniform(0.002, 0.35, n),
        "alpha": rng.uniform(0, 2.5, n),
        "secz": rng.uniform(1, 3, n),
    }
    model.transmission(**{k: v[:10] for k, v in par.items()})  # warm-up
    for chunk in (n, 4096):
        t0 = time.perf_counter()
        for i in range(0, n, chunk):
            model.transmission(**{k: v[i : i + chunk] for k, v in par.items()})
        dt = time.perf_counter() - t0
        print(
            f"BuiltinAtmosphere.transmission: {n} parameter sets x {model.wavelength.size} "
            f"wavelengths in chunks of {chunk}: {dt:.2f} s ({1e6 * dt / n:.1f} us per set)"
        )
    t0 = time.perf_counter()
    model.components(**{k: v[:4096] for k, v in par.items()})
    dt = time.perf_counter() - t0
    print(f"BuiltinAtmosphere.components: 4096 sets: {dt:.2f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, default=None, help=f"path to {TABLE_NAME}")
    ap.add_argument("--output", type=Path, default=OUTPUT)
    ap.add_argument("--validate", action="store_true", help="print the EW validation table")
    ap.add_argument("--benchmark", action="store_true", help="time 30,000 x 1601 evaluations")
    args = ap.parse_args(argv)
    if args.benchmark:
        benchmark()
        return 0
    table = read_fgcm_atmosphere_table(args.table or default_table_path())
    if args.validate:
        validate(table)
        return 0
    coeffs = derive(table)
    write_coefficients(coeffs, args.output)
    print(f"wrote {args.output} (ozone layer height {coeffs.o3_layer_height_km:.2f} km)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
