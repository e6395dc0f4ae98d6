"""``summary.json`` (the run's record and completion marker) and the final summary table.

summary.json is written last by :func:`jaxfgcm.output.write_products`: a directory whose
summary.json has ``"status": "complete"`` holds a complete, consistent set of products.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path

from jaxfgcm.output._io import write_json

FILENAME = "summary.json"


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the numbers."""
    import importlib.metadata

    out = {"python": platform.python_version()}
    for name in ("jaxfgcm", "jax", "jaxlib", "numpy", "scipy", "pyarrow", "equinox", "optax"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name == "jaxfgcm":
                import jaxfgcm

                out[name] = jaxfgcm.__version__
    return out


def device_description() -> str:
    """The JAX devices this process computes on (from JAX_PLATFORMS), e.g. ``cpu:0``."""
    import jax

    return ", ".join(f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices())


def write_summary(summary: dict, out_dir: str | Path) -> Path:
    return write_json(summary, Path(out_dir) / FILENAME)


def _mmag(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{1000.0 * value:.2f}"


def format_summary_table(summary: dict) -> str:
    """A per-band text table: stars, visits, photometric visits, repeatability (and truth)."""
    bands = summary.get("bands", {})
    truth = summary.get("truth") or {}
    tb = truth.get("bands", {})
    head = ["band", "n_stars", "n_visits", "n_photometric", "repeat_mmag"]
    if tb:
        head += ["zp_rms_mmag", "star_rms_mmag", "n_zp"]
    rows = [head]
    for band, b in bands.items():
        row = [band, str(b.get("n_stars", 0)), str(b.get("n_visits", 0)),
               str(b.get("n_photometric_visits", 0)), _mmag(b.get("repeatability"))]
        if tb:
            t = tb.get(band, {})
            row += [_mmag(t.get("zeropoint_rms")), _mmag(t.get("star_mag_rms")),
                    str(t.get("n_zeropoints", 0))]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    if truth.get("flags"):
        f = truth["flags"]
        lines.append(
            f"photometric flags vs truth: {f.get('cloudy_flagged', 0)}/{f.get('n_cloudy', 0)} "
            f"cloudy visits flagged, {f.get('clear_flagged', 0)}/{f.get('n_clear', 0)} clear "
            "visits wrongly flagged")
    return "\n".join(lines)
