"""StarCatalog: the stars, observations and visits tables, and their parquet cache.

Cache layout (one directory, e.g. ``OUT/stars/``)::

    stars.parquet         star_id, ra, dec, n_obs_<band>...   (one row per star)
    observations.parquet  sorted by star_index                 (one row per observation)
    visits.parquet        visit-level quantities               (one row per visit)
    visit_detectors.parquet  per (visit, detector): psf_fwhm   (one row per summary row)
    catalog.json          manifest: format_version, tract, bands, physical_filters, row counts,
                          the configuration used, and the cut summary

Every file is written atomically, and the manifest last (after removing any old one), so a
directory without ``catalog.json``, or whose row counts disagree with it, is never loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jaxfgcm.repo import atomic_write

#: 2: observations carry psf_fwhm (per visit and detector). 3: the visit_detectors table
#: (psf_fwhm of every detector, also those without a star in the visit).
CATALOG_FORMAT_VERSION = 3
MANIFEST = "catalog.json"
TABLE_FILES = {"stars": "stars.parquet", "observations": "observations.parquet",
               "visits": "visits.parquet", "visit_detectors": "visit_detectors.parquet"}

#: Column dtypes of the observation table (the large axis). int32 indices are what JAX uses
#: by default; mag is float64 (sub-mmag means over many observations); errors, delta-aper and
#: pixel positions are float32 (2e-4 px at 4000 px is far below what a star flat resolves).
OBSERVATION_DTYPES = {
    "star_index": np.int32,
    "visit": np.int64,
    "detector": np.int32,
    "band_index": np.int32,
    "filter_index": np.int32,
    "mag": np.float64,
    "mag_err": np.float32,
    "x": np.float32,
    "y": np.float32,
    "delta_aper": np.float32,
    "psf_fwhm": np.float32,  # arcsec, of the observation's (visit, detector); NaN if unknown
    "mjd": np.float64,
    "source_id": np.int64,
}


class StarCatalogError(ValueError):
    """A star-catalog cache is missing, incomplete, corrupt or built with another config."""


class Table(dict):
    """Columns (name -> 1-d or 2-d ndarray, equal first dimension); ``t.ra`` == ``t["ra"]``."""

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.values()))) if self else 0


@dataclass
class StarCatalog:
    """Output of `jaxfgcm.stars.build_stars` (contract in docs/architecture.md).

    ``stars``: star_id (int64, 1..N), ra, dec (deg, float64), n_obs (int32, shape
    (n_stars, n_bands), columns in ``bands`` order).
    ``observations`` (sorted by star_index, then band, then mjd): see OBSERVATION_DTYPES;
    band_index indexes ``bands``, filter_index indexes ``physical_filters``.
    ``visits``: visit, physical_filter, band, mjd, exptime, telra, teldec, telha, telrot (deg),
    pressure (mbar, NaN if unknown), psf_fwhm (arcsec), sky_background, delta_aper (mag),
    n_sources (rows read), n_obs (observations kept).
    ``visit_detectors`` (sorted by visit, then detector): visit, detector, psf_fwhm (arcsec) of
    every science detector the visit summary lists for the catalog's visits.
    ``summary``: counts of every cut (docs/stars.md).
    """

    stars: Table
    observations: Table
    visits: Table
    bands: tuple[str, ...]
    physical_filters: tuple[str, ...]
    tract: int
    summary: dict = field(default_factory=dict)
    #: The configuration sections this catalog was built with (instrument, stars).
    config: dict = field(default_factory=dict)
    visit_detectors: Table = field(default_factory=Table)

    @property
    def n_stars(self) -> int:
        return self.stars.n_rows

    @property
    def n_observations(self) -> int:
        return self.observations.n_rows

    @property
    def n_visits(self) -> int:
        return self.visits.n_rows

    def obs_offsets(self) -> np.ndarray:
        """(n_stars + 1,) start of each star's observations; star i is offsets[i]:offsets[i+1]."""
        counts = np.bincount(self.observations["star_index"], minlength=self.n_stars)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    # ---- cache -------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the catalog to ``directory`` (created); returns the manifest path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = directory / MANIFEST
        # An old manifest must not vouch for tables that are half replaced.
        manifest.unlink(missing_ok=True)
        stars = {k: v for k, v in self.stars.items() if k != "n_obs"}
        for b, band in enumerate(self.bands):
            stars[f"n_obs_{band}"] = self.stars["n_obs"][:, b]
        for name, columns in (("stars", stars), ("observations", self.observations),
                              ("visits", self.visits),
                              ("visit_detectors", self.visit_detectors)):
            table = pa.table({k: pa.array(np.asarray(v)) for k, v in columns.items()})
            with atomic_write(directory / TABLE_FILES[name]) as tmp:
                pq.write_table(table, tmp)
        meta = {
            "format_version": CATALOG_FORMAT_VERSION,
            "tract": int(self.tract),
            "bands": list(self.bands),
            "physical_filters": list(self.physical_filters),
            "rows": {"stars": self.n_stars, "observations": self.n_observations,
                     "visits": self.n_visits,
                     "visit_detectors": self.visit_detectors.n_rows},
            "config": self.config,
            "summary": self.summary,
        }
        with atomic_write(manifest) as tmp:
            tmp.write_text(json.dumps(meta, indent=2, default=_json_default))
        return manifest

    @classmethod
    def load(cls, directory: str | os.PathLike, config=None, tract: int | None = None
             ) -> StarCatalog:
        """Read a cache written by `save`.

        With ``config`` (a `jaxfgcm.config.Config`) and/or ``tract``, a cache built with other
        bands, physical filters, ``stars`` settings or tract raises StarCatalogError naming
        what differs.
        """
        directory = Path(directory)
        manifest = directory / MANIFEST
        if not manifest.is_file():
            raise StarCatalogError(f"{manifest}: missing (no complete star catalog cache here)")
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StarCatalogError(f"{manifest}: unreadable ({exc})") from exc
        if meta.get("format_version") != CATALOG_FORMAT_VERSION:
            raise StarCatalogError(f"{manifest}: format_version {meta.get('format_version')!r}"
                                   f", this jaxfgcm reads {CATALOG_FORMAT_VERSION}")
        if tract is not None and int(tract) != meta["tract"]:
            raise StarCatalogError(f"{manifest}: built for tract {meta['tract']}, not {tract}")
        if config is not None:
            wanted = catalog_config(config)
            diff = [f"{sec}.{k}" for sec in wanted for k in wanted[sec]
                    if meta["config"].get(sec, {}).get(k) != wanted[sec][k]]
            if diff:
                raise StarCatalogError(f"{manifest}: built with different settings: {diff}")
        tables = {}
        for name, fname in TABLE_FILES.items():
            path = directory / fname
            try:
                t = pq.read_table(path)
            except (OSError, pa.ArrowException) as exc:
                raise StarCatalogError(f"{path}: cannot read ({exc})") from exc
            if t.num_rows != meta["rows"][name]:
                raise StarCatalogError(f"{path}: {t.num_rows} rows, manifest says "
                                       f"{meta['rows'][name]}")
            tables[name] = Table({c: t.column(c).to_numpy() for c in t.column_names})
        bands = tuple(meta["bands"])
        stars = tables["stars"]
        missing = [f"n_obs_{b}" for b in bands if f"n_obs_{b}" not in stars]
        if missing:
            raise StarCatalogError(f"{directory / TABLE_FILES['stars']}: missing {missing}")
        stars["n_obs"] = np.column_stack([stars.pop(f"n_obs_{b}") for b in bands]).astype(
            np.int32).reshape(-1, len(bands))
        for name in ("visit", "physical_filter", "band"):
            if tables["visits"][name].dtype == object:
                tables["visits"][name] = tables["visits"][name].astype(str)
        return cls(stars=stars, observations=tables["observations"], visits=tables["visits"],
                   bands=bands, physical_filters=tuple(meta["physical_filters"]),
                   tract=int(meta["tract"]), summary=meta["summary"], config=meta["config"],
                   visit_detectors=tables["visit_detectors"])


def catalog_config(config) -> dict:
    """The configuration sections a catalog depends on (stored in, and checked against, it)."""
    full = config.to_dict()
    return {"instrument": {k: full["instrument"][k] for k in ("bands", "physical_filters")},
            "stars": full["stars"]}


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")
