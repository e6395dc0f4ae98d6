"""Small writing helpers shared by the product writers: atomic parquet/JSON/YAML files.

Every product is written to a temporary name in its final directory and renamed with
``os.replace`` (jaxfgcm.repo.atomic_write), so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from jaxfgcm.atomic import atomic_write


def write_parquet(table: pa.Table, path: str | Path) -> Path:
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_json(data, path: str | Path) -> Path:
    # Strict JSON: NaN/inf (no measurement) become null.
    text = json.dumps(_finite(data), indent=2, sort_keys=False, default=_json_default,
                      allow_nan=False)
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n")
    return Path(path)


def write_yaml(data, path: str | Path, header: str = "") -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return Path(path)


def _finite(obj):
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _json_default(obj):
    # NumPy scalars and arrays appear in summaries; JSON wants plain Python numbers and lists.
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def table_metadata(table: pa.Table, meta: dict[str, str]) -> pa.Table:
    """``table`` with ``meta`` added to its schema metadata (keys prefixed ``jaxfgcm.``)."""
    old = dict(table.schema.metadata or {})
    old.update({f"jaxfgcm.{k}".encode(): str(v).encode() for k, v in meta.items()})
    return table.replace_schema_metadata(old)
