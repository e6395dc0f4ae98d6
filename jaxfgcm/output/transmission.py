"""``transmission_atmosphere_fgcm_tract.parquet``: the fitted atmosphere of every visit.

One row per visit: the fitted parameters (pressure mbar, pwv mm, o3 Dobson, tau at the aerosol
normalisation wavelength, alpha, airmass = sec z at the boresight) and the transmission curve of
``jaxfgcm.atmosphere.BuiltinAtmosphere`` at those parameters, on the LUT's wavelength grid
(``wavelength`` Angstrom and ``transmission`` as list columns). This is the atmosphere part of
the passband only; multiply by the instrument throughput for the full passband.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from jaxfgcm.output._io import table_metadata, write_parquet

FILENAME = "transmission_atmosphere_fgcm_tract.parquet"
PARAMETERS = ("pressure", "pwv", "o3", "tau", "alpha", "airmass")


def transmission_table(
    *, visit, band, physical_filter, mjd, params: dict, wavelength, atmosphere=None,
    lambda_norm: float = 7750.0,
) -> pa.Table:
    """Evaluate the atmosphere at each visit's parameters and assemble the product.

    ``params``: arrays (n_visit,) for :data:`PARAMETERS`. ``atmosphere``: any object with
    ``transmission(pressure, pwv, o3, tau, alpha, secz)``; default the built-in model.
    """
    if atmosphere is None:
        from jaxfgcm.atmosphere import BuiltinAtmosphere

        atmosphere = BuiltinAtmosphere(wavelength=wavelength, lambda_norm=lambda_norm)
    p = {k: np.asarray(params[k], dtype=np.float64) for k in PARAMETERS}
    n = len(visit)
    for k, v in p.items():
        if v.shape != (n,):
            raise ValueError(f"transmission: parameter '{k}' has shape {v.shape}, want ({n},)")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"transmission: parameter '{k}' has non-finite values")
    trans = atmosphere.transmission(
        p["pressure"], p["pwv"], p["o3"], p["tau"], p["alpha"], p["airmass"])
    wl = np.asarray(wavelength, dtype=np.float64)
    # float32 curves: transmissions in [0, 1] need ~1e-7 absolute precision at most, and
    # float32 halves the file (n_visit x n_lambda values).
    cols = {
        "visit": pa.array(np.asarray(visit, dtype=np.int64)),
        "band": pa.array([str(b) for b in band], pa.string()),
        "physical_filter": pa.array([str(f) for f in physical_filter], pa.string()),
        "mjd": pa.array(np.asarray(mjd, dtype=np.float64)),
        **{k: pa.array(p[k]) for k in PARAMETERS},
        "wavelength": pa.array([wl.astype(np.float32)] * n, pa.list_(pa.float32())),
        "transmission": pa.array(list(np.asarray(trans, dtype=np.float32)),
                                 pa.list_(pa.float32())),
    }
    return table_metadata(pa.table(cols), {
        "product": "atmosphere transmission per visit",
        "units": "wavelength Angstrom; pressure mbar; pwv mm; o3 Dobson; tau at "
                 f"{lambda_norm:g} A; airmass = sec(zenith) at the boresight",
        "model": type(atmosphere).__name__,
    })


def write_transmission(table: pa.Table, out_dir: str | Path) -> Path:
    return write_parquet(table, Path(out_dir) / FILENAME)


def read_transmission(path: str | Path) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(wavelength, {visit: transmission}) from a transmission product."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    visits = t.column("visit").to_numpy()
    wl = np.asarray(t.column("wavelength")[0].as_py(), dtype=np.float64) if len(t) else np.empty(0)
    curves = {int(v): np.asarray(c, dtype=np.float64)
              for v, c in zip(visits, t.column("transmission").to_pylist())}
    return wl, curves
