"""The jaxfgcm data repository: validated reading of every input, atomic writing of every file.

The format is specified in ``docs/repository.md`` (versioned by ``format_version`` in
``repo.yaml``). Datasets carry the names, columns and dtypes of their LSST Butler twins
(``sourceTable_visit``, ``visitSummary``), so an export from a Butler maps one to one.

Every problem found while reading raises :class:`RepositoryError` whose message starts with the
file and names the column and the problem. Writers validate against the same schemas as the
reader (the simulator cannot write what the reader rejects) and write atomically.

Usage::

    repo = Repository("REPO")
    tract = repo.tract(9615)
    vs = repo.visit_summary()
    for visit in repo.source_visits():
        cols = repo.read_source_table(visit, ["ra", "dec", "apFlux_12_0_instFlux"])
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from jaxfgcm.atomic import atomic_write

#: The repository format this code writes; docs/repository.md describes it.
FORMAT_VERSION = 1
#: Format versions this code reads.
SUPPORTED_FORMAT_VERSIONS = (1,)

REPO_YAML = "repo.yaml"
CAMERA_FILE = "camera.parquet"
SKYMAP_FILE = "skymap.yaml"
THROUGHPUT_DIR = "throughput"
LUT_FILE = "fgcmLookupTable.fits"
TRUTH_DIR = "truth"
#: Dataset names, current first; the newer DRP pipelines call them ``visit_summary`` / ``source``.
VISIT_SUMMARY_FILES = ("visitSummary.parquet", "visit_summary.parquet")
SOURCE_DIRS = ("sourceTable_visit", "source")

# Canonical dtypes. Names and types follow lsst/sdm_schemas hsc.yaml (Source table) and
# pipe_tasks Source.yaml: ids int64, detector int16, fluxes/positions double, flags bool.
SOURCE_COLUMNS: dict[str, str] = {
    "sourceId": "int64",
    "visit": "int64",
    "detector": "int16",
    "ra": "float64",
    "dec": "float64",
    "x": "float64",
    "y": "float64",
    "apFlux_12_0_instFlux": "float64",
    "apFlux_12_0_instFluxErr": "float64",
    "apFlux_12_0_flag": "bool",
    "apFlux_17_0_instFlux": "float64",
    "apFlux_17_0_instFluxErr": "float64",
    "apFlux_17_0_flag": "bool",
    "localBackground_instFlux": "float64",
    "localBackground_flag": "bool",
    "pixelFlags_edge": "bool",
    "pixelFlags_interpolatedCenter": "bool",
    "pixelFlags_saturatedCenter": "bool",
    "pixelFlags_crCenter": "bool",
    "pixelFlags_bad": "bool",
    "pixelFlags_interpolated": "bool",
    "pixelFlags_saturated": "bool",
    "centroid_flag": "bool",
    "extendedness": "float64",
    "parentSourceId": "int64",
    "deblend_nChild": "int32",
    "sky_source": "bool",
    "calib_psf_candidate": "bool",
    "detect_isPrimary": "bool",
}

#: One row per (visit, detector). Angles in degrees, air_pressure in Pa (LSST VisitInfo
#: weather.airPressure), psfSigma in pixels, pixelScale in arcsec/pixel, skyBg in counts/pixel,
#: mjd at mid-exposure (TAI), exptime in seconds, bbox in pixels (inclusive max, as afw Box2I).
VISIT_SUMMARY_COLUMNS: dict[str, str] = {
    "visit": "int64",
    "detector": "int16",
    "physical_filter": "string",
    "band": "string",
    "mjd": "float64",
    "exptime": "float64",
    "boresight_ra": "float64",
    "boresight_dec": "float64",
    "boresight_rot_angle": "float64",
    "boresight_hour_angle": "float64",
    "zenith_distance": "float64",
    "parallactic_angle": "float64",
    "air_pressure": "float64",
    "psfSigma": "float64",
    "pixelScale": "float64",
    "skyBg": "float64",
    "bbox_min_x": "int32",
    "bbox_min_y": "int32",
    "bbox_max_x": "int32",
    "bbox_max_y": "int32",
}

# Columns whose values may be NaN by design (a measurement that failed is flagged, not dropped).
_NAN_ALLOWED = {
    "apFlux_12_0_instFlux", "apFlux_12_0_instFluxErr", "apFlux_17_0_instFlux",
    "apFlux_17_0_instFluxErr", "localBackground_instFlux", "extendedness", "air_pressure",
    "psfSigma", "pixelScale", "skyBg", "parallactic_angle",
}

_SOURCE_FILE_RE = re.compile(r"^(\d+)\.parquet$")
#: HSC packs ccdVisitId = visit * 200 + detector (obs_subaru); used only to recover ``detector``
#: from 2021-2024 tables that carry ccdVisitId instead.
_HSC_CCDVISIT_MULTIPLIER = 200


class RepositoryError(ValueError):
    """A repository file is missing, unreadable or does not follow docs/repository.md."""


# --------------------------------------------------------------------------------------------
# Atomic writing
# --------------------------------------------------------------------------------------------


def write_yaml(path: str | os.PathLike, data: Any) -> None:
    """Write a YAML document atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))


def write_parquet(
    path: str | os.PathLike,
    columns: Mapping[str, Any],
    schema: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a dict of equal-length 1-d arrays as parquet, atomically.

    With ``schema`` (column -> canonical dtype), every schema column must be present and is cast
    to its canonical dtype; extra columns are written as they are.
    """
    path = Path(path)
    arrays: dict[str, pa.Array] = {}
    n = None
    if schema is not None:
        missing = [c for c in schema if c not in columns]
        if missing:
            raise RepositoryError(f"{path}: cannot write, missing columns {missing}")
    for name, values in columns.items():
        values = np.asarray(values)
        if values.ndim != 1:
            raise RepositoryError(f"{path}: column '{name}' is not one-dimensional")
        if n is None:
            n = len(values)
        elif len(values) != n:
            raise RepositoryError(f"{path}: column '{name}' has {len(values)} rows, not {n}")
        dtype = schema.get(name) if schema is not None else None
        if dtype == "string":
            arrays[name] = pa.array(values.astype(str), type=pa.string())
        elif dtype is not None:
            arrays[name] = pa.array(values.astype(dtype, copy=False))
        else:
            arrays[name] = pa.array(values)
    table = pa.table(arrays)
    if metadata:
        table = table.replace_schema_metadata({k: str(v) for k, v in metadata.items()})
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)


# --------------------------------------------------------------------------------------------
# Column-name normalisation and dtype validation
# --------------------------------------------------------------------------------------------


def _canonical_name(name: str) -> str:
    """Map a legacy sourceTable_visit column name to the current one.

    Pre-2021-09 tables capitalise the first letter (``ApFlux_12_0_instFlux``, ``PixelFlags_edge``,
    ``Centroid_flag``, ``Deblend_nChild``, ``Calib_psf_candidate``); 2021-2023 tables call the
    declination ``decl``.
    """
    if name == "decl":
        return "dec"
    if name[:1].isupper() and not name.isupper():
        return name[0].lower() + name[1:]
    return name


def _expected_dtype(name: str, schema: Mapping[str, str]) -> str | None:
    """Canonical dtype of a column: from the schema, else by LSST naming conventions."""
    if name in schema:
        return schema[name]
    if name.endswith(("_instFlux", "_instFluxErr")):
        return "float64"
    if name.endswith("_flag") or name.startswith("pixelFlags_"):
        return "bool"
    return None


def _convert(values: pa.ChunkedArray, expected: str | None, where: str) -> np.ndarray:
    """Arrow column -> NumPy array of the canonical dtype, or RepositoryError."""
    t = values.type
    if expected is None:
        return values.to_numpy(zero_copy_only=False)
    name = where
    if expected == "bool":
        if not pa.types.is_boolean(t):
            raise RepositoryError(f"{name}: dtype {t}, expected bool")
        if values.null_count:
            raise RepositoryError(f"{name}: {values.null_count} null values in a flag column")
        return values.to_numpy(zero_copy_only=False).astype(bool, copy=False)
    if expected == "string":
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_dictionary(t)):
            raise RepositoryError(f"{name}: dtype {t}, expected string")
        if values.null_count:
            raise RepositoryError(f"{name}: {values.null_count} null values")
        return np.asarray(values.to_pylist(), dtype=str)
    if expected.startswith("float"):
        # float32 is accepted: pipe_tasks casts many Source columns to float32 since 2025-03.
        if not pa.types.is_floating(t):
            raise RepositoryError(f"{name}: dtype {t}, expected {expected}")
        arr = values.to_numpy(zero_copy_only=False)
        return arr.astype(expected, copy=False)
    if expected.startswith("int"):
        if not pa.types.is_integer(t):
            raise RepositoryError(f"{name}: dtype {t}, expected {expected}")
        if values.null_count:
            raise RepositoryError(f"{name}: {values.null_count} null values in an integer column")
        arr = values.to_numpy(zero_copy_only=False)
        info = np.iinfo(expected)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise RepositoryError(f"{name}: values outside the range of {expected}")
        return arr.astype(expected, copy=False)
    raise AssertionError(expected)  # pragma: no cover - schemas only use the kinds above


def _open_parquet(path: Path) -> pq.ParquetFile:
    if not path.is_file():
        raise RepositoryError(f"{path}: file not found")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise RepositoryError(f"{path}: not a readable parquet file ({exc})") from exc


def _read_columns(
    path: Path, columns: Sequence[str] | None, schema: Mapping[str, str],
    required: Sequence[str] = (), normalise: bool = True,
) -> dict[str, np.ndarray]:
    """Read (canonical) ``columns`` of a parquet file, normalising legacy names and dtypes.

    ``columns=None`` reads every column. ``required`` columns must exist even when not read.
    """
    pf = _open_parquet(path)
    file_names = pf.schema_arrow.names
    # canonical name -> name in the file; a current name wins over its legacy twin.
    mapping: dict[str, str] = {}
    for fname in file_names:
        mapping.setdefault(_canonical_name(fname) if normalise else fname, fname)
    for fname in file_names:
        if fname in schema or not normalise or _canonical_name(fname) == fname:
            mapping[fname] = fname
    for col in required:
        if col not in mapping:
            raise RepositoryError(f"{path}: missing column '{col}'")
    if columns is None:
        wanted = list(dict.fromkeys(_canonical_name(f) if normalise else f for f in file_names))
    else:
        wanted = list(dict.fromkeys(columns))
    missing = [c for c in wanted if c not in mapping]
    if missing:
        raise RepositoryError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}")
    try:
        table = pf.read(columns=[mapping[c] for c in wanted])
    except (pa.ArrowException, OSError) as exc:
        raise RepositoryError(f"{path}: corrupt parquet data ({exc})") from exc
    out: dict[str, np.ndarray] = {}
    for c in wanted:
        col = table.column(mapping[c])
        out[c] = _convert(col, _expected_dtype(c, schema), f"{path}: column '{c}'")
        if c in schema and schema[c].startswith("float") and c not in _NAN_ALLOWED:
            bad = ~np.isfinite(out[c])
            if bad.any():
                raise RepositoryError(f"{path}: column '{c}' has {int(bad.sum())} non-finite values")
    return out


# --------------------------------------------------------------------------------------------
# Sky map
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TractInfo:
    """A tract: a circle of ``radius_deg`` about (``ra``, ``dec``) (degrees, ICRS)."""

    tract_id: int
    ra: float
    dec: float
    radius_deg: float

    def separation_deg(self, ra: Any, dec: Any) -> np.ndarray:
        """Great-circle distance (degrees) of points from the tract centre (haversine)."""
        ra1, dec1 = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(
            np.asarray(dec, dtype=np.float64))
        ra0, dec0 = np.radians(self.ra), np.radians(self.dec)
        h = (np.sin((dec1 - dec0) / 2) ** 2
             + np.cos(dec0) * np.cos(dec1) * np.sin((ra1 - ra0) / 2) ** 2)
        return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))

    def contains(self, ra: Any, dec: Any) -> np.ndarray:
        """True where (ra, dec) lies inside the tract circle."""
        return self.separation_deg(ra, dec) <= self.radius_deg


# --------------------------------------------------------------------------------------------
# The repository
# --------------------------------------------------------------------------------------------


class Repository:
    """A jaxfgcm data repository (docs/repository.md), opened and validated.

    Opening reads and checks ``repo.yaml``; each dataset is validated when it is read.
    Attributes: ``path``, ``format_version``, ``instrument``, ``site`` (dict: name, latitude_deg,
    longitude_deg, elevation_m), ``physical_filters`` (physical filter -> band),
    ``config_name``, ``metadata`` (the whole repo.yaml).
    """

    atomic_write = staticmethod(atomic_write)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / REPO_YAML
        if not self.path.is_dir():
            raise RepositoryError(f"{self.path}: repository directory not found")
        if not meta_path.is_file():
            raise RepositoryError(f"{meta_path}: missing {REPO_YAML} (not a jaxfgcm repository)")
        meta = _read_yaml(meta_path)
        if not isinstance(meta, dict):
            raise RepositoryError(f"{meta_path}: top level must be a mapping")
        version = meta.get("format_version")
        if version is None:
            raise RepositoryError(f"{meta_path}: missing key 'format_version'")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise RepositoryError(
                f"{meta_path}: unsupported format_version {version!r} "
                f"(this jaxfgcm reads {list(SUPPORTED_FORMAT_VERSIONS)})")
        for key in ("instrument", "site", "physical_filters"):
            if key not in meta:
                raise RepositoryError(f"{meta_path}: missing key '{key}'")
        site = meta["site"]
        if not isinstance(site, dict) or not all(
                isinstance(site.get(k), (int, float)) and not isinstance(site.get(k), bool)
                for k in ("latitude_deg", "longitude_deg", "elevation_m")):
            raise RepositoryError(
                f"{meta_path}: 'site' must give numeric latitude_deg, longitude_deg, elevation_m")
        pf = meta["physical_filters"]
        if not isinstance(pf, dict) or not pf or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in pf.items()):
            raise RepositoryError(
                f"{meta_path}: 'physical_filters' must map physical filter names to band names")
        self.metadata: dict[str, Any] = meta
        self.format_version: int = int(version)
        self.instrument: str = str(meta["instrument"])
        self.site: dict[str, Any] = dict(site)
        self.physical_filters: dict[str, str] = dict(pf)
        self.config_name: str | None = meta.get("config")

    def __repr__(self) -> str:
        return f"Repository({str(self.path)!r}, instrument={self.instrument!r})"

    # ---- instrument --------------------------------------------------------------------------

    @property
    def camera_path(self) -> Path:
        return self.path / CAMERA_FILE

    @property
    def throughput_path(self) -> Path:
        return self.path / THROUGHPUT_DIR

    @property
    def lut_path(self) -> Path:
        """Where the look-up table lives (``REPO/fgcmLookupTable.fits``); may not exist yet."""
        return self.path / LUT_FILE

    def camera(self):
        """The camera geometry (``jaxfgcm.camera.read_camera`` of ``camera.parquet``)."""
        from jaxfgcm.camera import read_camera

        if not self.camera_path.is_file():
            raise RepositoryError(f"{self.camera_path}: file not found")
        return read_camera(self.camera_path)

    def throughput(self):
        """The instrument passbands (``jaxfgcm.throughput.read_throughput`` of ``throughput/``)."""
        from jaxfgcm.throughput import read_throughput

        if not self.throughput_path.is_dir():
            raise RepositoryError(f"{self.throughput_path}: directory not found")
        return read_throughput(self.throughput_path, self.camera())

    # ---- sky map -----------------------------------------------------------------------------

    def _skymap(self) -> dict[int, TractInfo]:
        path = self.path / SKYMAP_FILE
        if not path.is_file():
            raise RepositoryError(f"{path}: file not found")
        data = _read_yaml(path)
        tracts = data.get("tracts") if isinstance(data, dict) else None
        if not isinstance(tracts, dict):
            raise RepositoryError(f"{path}: missing mapping 'tracts' (tract id -> ra, dec, "
                                  "radius_deg)")
        out = {}
        for key, spec in tracts.items():
            try:
                tid = int(key)
                out[tid] = TractInfo(tid, float(spec["ra"]), float(spec["dec"]),
                                     float(spec["radius_deg"]))
            except (TypeError, ValueError, KeyError) as exc:
                raise RepositoryError(
                    f"{path}: tract {key!r} needs numeric ra, dec, radius_deg ({exc!r})") from exc
            if not (-90 <= out[tid].dec <= 90 and out[tid].radius_deg > 0):
                raise RepositoryError(f"{path}: tract {key!r} has an invalid dec or radius")
        return out

    def tracts(self) -> list[int]:
        """Tract ids defined in ``skymap.yaml``."""
        return sorted(self._skymap())

    def tract(self, tract_id: int) -> TractInfo:
        """The tract's centre and radius; an unknown tract is a RepositoryError."""
        skymap = self._skymap()
        if int(tract_id) not in skymap:
            raise RepositoryError(
                f"{self.path / SKYMAP_FILE}: unknown tract {tract_id} (defined: {sorted(skymap)})")
        return skymap[int(tract_id)]

    # ---- visit summary -----------------------------------------------------------------------

    @property
    def visit_summary_path(self) -> Path:
        for name in VISIT_SUMMARY_FILES:
            if (self.path / name).is_file():
                return self.path / name
        return self.path / VISIT_SUMMARY_FILES[0]

    def visit_summary(self, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The visit summary: one row per (visit, detector), sorted by visit then detector.

        Returns every schema column (plus any extra ones in the file) unless ``columns`` names a
        subset. Checks: all schema columns present with their dtypes, no duplicate
        (visit, detector) rows, physical filters known to repo.yaml with the matching band, and
        visit-level values (physical_filter, mjd, exptime, boresight) equal across a visit's rows.
        """
        path = self.visit_summary_path
        # The file is small (visits x detectors rows): read and validate all of it every time.
        data = _read_columns(path, None, VISIT_SUMMARY_COLUMNS,
                             required=list(VISIT_SUMMARY_COLUMNS))
        if columns is not None:
            unknown = [c for c in columns if c not in data]
            if unknown:
                raise RepositoryError(f"{path}: missing column(s) {unknown}")
        if data["visit"].size == 0:
            raise RepositoryError(f"{path}: no rows")
        order = np.lexsort((data["detector"], data["visit"]))
        data = {k: v[order] for k, v in data.items()}
        key = data["visit"].astype(np.int64) * 65536 + data["detector"].astype(np.int64)
        dup = np.flatnonzero(key[1:] == key[:-1])
        if dup.size:
            i = dup[0]
            raise RepositoryError(
                f"{path}: duplicate rows for (visit, detector) = "
                f"({data['visit'][i]}, {data['detector'][i]}) ({dup.size} duplicates)")
        unknown = sorted(set(data["physical_filter"].tolist()) - set(self.physical_filters))
        if unknown:
            raise RepositoryError(f"{path}: column 'physical_filter' has filters {unknown} "
                                  f"not listed in {REPO_YAML}")
        expect_band = np.array([self.physical_filters[f] for f in data["physical_filter"]],
                               dtype=str)
        if data["band"].size and not np.array_equal(expect_band, data["band"]):
            i = int(np.flatnonzero(expect_band != data["band"])[0])
            raise RepositoryError(
                f"{path}: column 'band' is {data['band'][i]!r} for physical_filter "
                f"{data['physical_filter'][i]!r} (repo.yaml says {expect_band[i]!r})")
        starts = np.flatnonzero(np.r_[True, data["visit"][1:] != data["visit"][:-1]])
        for c in ("physical_filter", "mjd", "exptime", "boresight_ra", "boresight_dec",
                  "boresight_rot_angle"):
            first = np.repeat(data[c][starts], np.diff(np.r_[starts, len(data[c])]))
            if not np.array_equal(first, data[c]):
                i = int(np.flatnonzero(first != data[c])[0])
                raise RepositoryError(f"{path}: column '{c}' differs between the detectors of "
                                      f"visit {data['visit'][i]}")
        if columns is not None:
            data = {c: data[c] for c in dict.fromkeys(["visit", "detector", *columns])}
        return data

    # ---- source tables -----------------------------------------------------------------------

    @property
    def source_dir(self) -> Path:
        """``sourceTable_visit/`` (or the newer ``source/`` where only that exists)."""
        for name in SOURCE_DIRS:
            if (self.path / name).is_dir():
                return self.path / name
        return self.path / SOURCE_DIRS[0]

    def source_visits(self) -> list[int]:
        """Visits that have a source table file, sorted."""
        d = self.source_dir
        if not d.is_dir():
            raise RepositoryError(f"{d}: source table directory not found")
        visits = []
        for entry in d.iterdir():
            if entry.name.startswith("."):
                continue  # temporary files of an interrupted atomic write
            m = _SOURCE_FILE_RE.match(entry.name)
            if m is None:
                raise RepositoryError(
                    f"{entry}: unexpected file in {d.name}/ (expected <visit>.parquet)")
            visits.append(int(m.group(1)))
        return sorted(visits)

    def source_table_path(self, visit: int) -> Path:
        return self.source_dir / f"{int(visit)}.parquet"

    def source_table_columns(self, visit: int) -> list[str]:
        """Canonical names of the columns present in a visit's source table."""
        pf = _open_parquet(self.source_table_path(visit))
        return list(dict.fromkeys(_canonical_name(n) for n in pf.schema_arrow.names))

    def read_source_table(
        self, visit: int, columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Read ``columns`` (canonical names) of one visit's source table.

        Legacy names are normalised (``ApFlux_12_0_instFlux`` -> ``apFlux_12_0_instFlux``,
        ``decl`` -> ``dec``); dtypes are cast to the canonical ones (float32 -> float64, narrower
        ints widened). ``visit`` absent from an old table is filled from the file name; ``visit``
        values must equal the file's visit. ``columns=None`` reads every column.
        """
        path = self.source_table_path(visit)
        pf = _open_parquet(path)
        present = {_canonical_name(n) for n in pf.schema_arrow.names}
        want = None if columns is None else list(dict.fromkeys(columns))
        fill_visit = (want is not None and "visit" in want and "visit" not in present)
        fill_detector = (want is not None and "detector" in want and "detector" not in present
                         and "ccdVisitId" in present)
        read = want
        if want is not None:
            read = [c for c in want if not ((c == "visit" and fill_visit)
                                            or (c == "detector" and fill_detector))]
            if fill_detector:
                read.append("ccdVisitId")
        data = _read_columns(path, read, SOURCE_COLUMNS)
        n = pf.metadata.num_rows
        if fill_detector:
            ccd = data.pop("ccdVisitId").astype(np.int64)
            data["detector"] = (ccd - int(visit) * _HSC_CCDVISIT_MULTIPLIER).astype(np.int16)
        if fill_visit:
            data["visit"] = np.full(n, int(visit), dtype=np.int64)
        if "visit" in data and data["visit"].size and np.any(data["visit"] != int(visit)):
            raise RepositoryError(f"{path}: column 'visit' has values other than {int(visit)}")
        if want is not None:
            data = {c: data[c] for c in want}
        return data

    # ---- truth (simulated repositories only; never read by the calibration) ------------------

    def has_truth(self) -> bool:
        return (self.path / TRUTH_DIR).is_dir()

    def read_truth(self, name: str) -> dict[str, np.ndarray]:
        """A truth table (``truth/<name>.parquet``) as a dict of arrays (for tests and QA)."""
        return _read_columns(self.path / TRUTH_DIR / f"{name}.parquet", None, {},
                             normalise=False)

    # ---- whole-repository check --------------------------------------------------------------

    def validate(self) -> None:
        """Read and check every dataset (repo.yaml, skymap, visit summary, all source tables).

        Raises RepositoryError at the first problem. Also checks that every source table's
        (visit, detector) pairs appear in the visit summary and that sourceIds are unique.
        """
        self._skymap()
        vs = self.visit_summary(["physical_filter"])
        known = set(zip(vs["visit"].tolist(), vs["detector"].tolist()))
        seen_ids: list[np.ndarray] = []
        for visit in self.source_visits():
            t = self.read_source_table(visit, list(SOURCE_COLUMNS))
            pairs = {(visit, int(d)) for d in np.unique(t["detector"])}
            extra = pairs - known
            if extra:
                raise RepositoryError(
                    f"{self.source_table_path(visit)}: detectors "
                    f"{sorted(d for _, d in extra)} have no visit summary row")
            seen_ids.append(t["sourceId"])
        if seen_ids:
            ids = np.sort(np.concatenate(seen_ids))
            dup = ids[1:][ids[1:] == ids[:-1]]
            if dup.size:
                raise RepositoryError(f"{self.source_dir}: duplicate sourceId {dup[0]}")


# --------------------------------------------------------------------------------------------
# Writers (used by the simulator and by export scripts)
# --------------------------------------------------------------------------------------------


def write_repo_yaml(
    repo_path: str | os.PathLike,
    *,
    instrument: str,
    site: Mapping[str, Any],
    physical_filters: Mapping[str, str],
    config: str | None = "hsc",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``repo.yaml`` (format_version = FORMAT_VERSION)."""
    data: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "instrument": instrument,
        "site": {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in site.items()},
        "physical_filters": dict(physical_filters),
        "config": config,
    }
    if extra:
        data.update(extra)
    path = Path(repo_path) / REPO_YAML
    write_yaml(path, data)
    return path


def write_skymap(repo_path: str | os.PathLike, tracts: Sequence[TractInfo]) -> Path:
    """Write ``skymap.yaml`` with the given tracts."""
    data = {"tracts": {int(t.tract_id): {"ra": float(t.ra), "dec": float(t.dec),
                                         "radius_deg": float(t.radius_deg)} for t in tracts}}
    path = Path(repo_path) / SKYMAP_FILE
    write_yaml(path, data)
    return path


def write_visit_summary(repo_path: str | os.PathLike, columns: Mapping[str, Any]) -> Path:
    """Write ``visitSummary.parquet`` (all VISIT_SUMMARY_COLUMNS required, cast to schema)."""
    path = Path(repo_path) / VISIT_SUMMARY_FILES[0]
    write_parquet(path, columns, VISIT_SUMMARY_COLUMNS)
    return path


def write_source_table(
    repo_path: str | os.PathLike, visit: int, columns: Mapping[str, Any]
) -> Path:
    """Write ``sourceTable_visit/<visit>.parquet`` (all SOURCE_COLUMNS required)."""
    path = Path(repo_path) / SOURCE_DIRS[0] / f"{int(visit)}.parquet"
    write_parquet(path, columns, SOURCE_COLUMNS)
    return path


def write_truth(repo_path: str | os.PathLike, name: str, columns: Mapping[str, Any],
                metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``truth/<name>.parquet``."""
    path = Path(repo_path) / TRUTH_DIR / f"{name}.parquet"
    write_parquet(path, columns, None, metadata)
    return path


def _read_yaml(path: Path):
    """Parse a YAML file of the repository; invalid YAML is a RepositoryError naming it."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RepositoryError(f"{path}: not valid YAML ({exc})") from exc
