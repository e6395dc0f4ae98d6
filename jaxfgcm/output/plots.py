"""QA plots a calibrator looks at first (needs matplotlib: ``pip install jaxfgcm[plot]``).

* ``exposure_gray.png`` - exposure gray per band, photometric vs flagged exposures;
* ``zeropoints_vs_time.png`` - per-visit zeropoint (exposure-time removed) vs MJD per band;
* ``atmosphere_vs_time.png`` - fitted PWV, tau, alpha, O3 and airmass vs MJD;
* ``starflat_focal_plane.png`` - star-flat (mag) over the focal plane per physical filter;
* ``repeatability_vs_mag.png`` - RMS of reserved-star residuals vs magnitude per band;
* ``residual_map.png`` - median residual of photometric observations over the focal plane.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from jaxfgcm.atomic import atomic_write
from jaxfgcm.output.inputs import ProductInputs
from jaxfgcm.output.photocalib import _starflat_at


def make_qa_plots(inputs: ProductInputs, qa_dir, camera=None) -> tuple[list[str], str | None]:
    """Write the QA plots into ``qa_dir``; returns (file names, note or None)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "QA plots skipped: matplotlib is not installed (pip install jaxfgcm[plot])"
    qa_dir = Path(qa_dir)
    qa_dir.mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    makers = [
        ("exposure_gray.png", _exposure_gray),
        ("zeropoints_vs_time.png", _zeropoints_vs_time),
        ("atmosphere_vs_time.png", _atmosphere_vs_time),
        ("starflat_focal_plane.png", _starflat_focal_plane),
        ("repeatability_vs_mag.png", _repeatability_vs_mag),
        ("residual_map.png", _residual_map),
    ]
    for name, maker in makers:
        fig = maker(plt, inputs, camera)
        if fig is None:
            skipped.append(name)
            continue
        with atomic_write(qa_dir / name) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        written.append(name)
    note = f"QA plots not made (inputs missing): {', '.join(skipped)}" if skipped else None
    return written, note


def _band_colors(bands):
    palette = {"g": "tab:green", "r": "tab:red", "i": "tab:orange", "z": "tab:purple",
               "y": "tab:brown", "u": "tab:blue"}
    return {b: palette.get(b, f"C{k}") for k, b in enumerate(bands)}


def _grid(plt, n, width=4.0, height=3.2):
    ncol = min(n, 3)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(width * ncol, height * nrow), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _exposure_gray(plt, pi: ProductInputs, camera):
    gray = 1000.0 * np.asarray(pi.visit_gray, dtype=float)
    if gray.size == 0:
        return None
    fig, axes = _grid(plt, len(pi.bands))
    flag = np.asarray(pi.visit_flag)
    finite = np.isfinite(gray)
    # Range: the data, but at most -300..+100 mmag; clouds beyond pile up in the edge bins.
    lo = max(np.min(gray[finite]), -300.0) if finite.any() else -10.0
    hi = min(np.max(gray[finite]), 100.0) if finite.any() else 10.0
    bins = np.linspace(min(lo, -10.0), max(hi, 10.0), 41)
    shown = np.clip(gray, bins[0], bins[-1])
    cuts = np.asarray(pi.fit_state.get("photometric_cuts", np.zeros((0, 0))))
    high = np.asarray(pi.fit_state.get("high_cuts", np.zeros((0, 0))))
    for k, (ax, band) in enumerate(zip(axes, pi.bands)):
        sel = (np.asarray(pi.visit_band) == band) & finite
        ax.hist(shown[sel & (flag == 0)], bins=bins, color="tab:blue", label="photometric")
        ax.hist(shown[sel & (flag != 0)], bins=bins, color="tab:red", alpha=0.7,
                label="flagged")
        if cuts.ndim == 2 and cuts.shape[0] and np.isfinite(cuts[-1, k]):
            ax.axvline(1000 * cuts[-1, k], color="k", ls="--", lw=1, label="final cuts")
            ax.axvline(1000 * high[-1, k], color="k", ls="--", lw=1)
        n_out = int(np.sum(sel & ((gray < bins[0]) | (gray > bins[-1]))))
        more = f", {n_out} beyond the axis" if n_out else ""
        # Two lines: the count and the off-axis note overlap the neighbour panel on one line.
        ax.set_title(f"{band}: exposure gray\n({int(np.sum(sel))} visits{more})", fontsize=10)
        ax.set_xlabel("EXP_GRAY (mmag; negative = fainter than model)")
        ax.set_ylabel("visits")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _zeropoints_vs_time(plt, pi: ProductInputs, camera):
    if len(pi.pair_visit) == 0:
        return None
    good = np.asarray(pi.pair_flag) < 16
    zp = np.asarray(pi.pair_zeropoint) - 2.5 * np.log10(pi.pair_exptime())
    mjd = pi.pair_mjd()
    band = pi.pair_band()
    colors = _band_colors(pi.bands)
    fig, ax = plt.subplots(figsize=(8, 4))
    for b in pi.bands:
        sel = good & (band == b)
        if not sel.any():
            continue
        visits, inv = np.unique(np.asarray(pi.pair_visit)[sel], return_inverse=True)
        med = np.array([np.median(zp[sel][inv == k]) for k in range(visits.size)])
        t = np.array([np.median(mjd[sel][inv == k]) for k in range(visits.size)])
        ax.plot(t, med - np.median(med), "o", ms=4, color=colors[b],
                label=f"{b} (median {np.median(med):.3f})")
    ax.set_xlabel("MJD")
    ax.set_ylabel("zeropoint - band median (mag, per second)")
    ax.set_title("per-visit zeropoint (median over detectors, flag < 16)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _atmosphere_vs_time(plt, pi: ProductInputs, camera):
    atm = pi.visit_atmosphere
    keys = [k for k in ("pwv", "tau", "alpha", "o3", "pressure", "airmass") if k in atm]
    if not keys or len(pi.visit) == 0:
        return None
    fig, axes = _grid(plt, len(keys), width=4.2, height=2.8)
    units = {"pwv": "PWV (mm)", "tau": "tau (7750 A)", "alpha": "alpha", "o3": "O3 (DU)",
             "pressure": "pressure (mbar)", "airmass": "airmass (boresight)"}
    colors = _band_colors(pi.bands)
    band = np.asarray(pi.visit_band)
    for ax, k in zip(axes, keys):
        for b in pi.bands:
            sel = band == b
            ax.plot(np.asarray(pi.visit_mjd)[sel], np.asarray(atm[k])[sel], ".",
                    color=colors[b], label=b)
        ax.set_xlabel("MJD")
        ax.set_ylabel(units[k])
    axes[0].legend(fontsize=7)
    fig.suptitle("fitted atmosphere per visit")
    fig.tight_layout()
    return fig


def _starflat_focal_plane(plt, pi: ProductInputs, camera):
    if camera is None or len(pi.pair_visit) == 0:
        return None
    filters = pi.pair_filter()
    names = [f for f in dict.fromkeys(filters.tolist())]
    fig, axes = _grid(plt, len(names), width=4.2, height=3.8)
    n = 6  # points per detector side: enough to show a low-order Chebyshev surface
    u = (np.arange(n) + 0.5) / n
    for ax, f in zip(axes, names):
        rows = np.flatnonzero(filters == f)
        # One row per detector (the star flat is per epoch, filter, detector; first epoch).
        _, first = np.unique(np.asarray(pi.pair_detector)[rows], return_index=True)
        rows = rows[first]
        fx_all, fy_all, val_all = [], [], []
        for r in rows:
            bb = pi.pair_bbox[r]
            x = bb[0] + (bb[2] - bb[0]) * u
            y = bb[1] + (bb[3] - bb[1]) * u
            xx, yy = np.meshgrid(x, y)
            v = _starflat_at(pi.pair_starflat[r][None], bb[None], xx.ravel(), yy.ravel())
            fx, fy = camera.focal_plane(int(pi.pair_detector[r]), xx.ravel(), yy.ravel())
            fx_all.append(fx)
            fy_all.append(fy)
            val_all.append(1000.0 * v)
        fx, fy, val = (np.concatenate(a) for a in (fx_all, fy_all, val_all))
        lim = max(np.max(np.abs(val)), 0.5)
        sc = ax.scatter(fx, fy, c=val, s=6, marker="s", cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_aspect("equal")
        ax.set_title(f"{f}: star flat (mmag)")
        ax.set_xlabel("focal plane x (mm)")
        ax.set_ylabel("y (mm)")
        fig.colorbar(sc, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def _repeatability_vs_mag(plt, pi: ProductInputs, camera):
    obs = pi.obs
    if not obs or "residual" not in obs or len(obs["residual"]) == 0:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = _band_colors(pi.bands)
    reserved = np.asarray(obs.get("reserved", np.ones(len(obs["residual"]), bool)))
    photometric = np.asarray(obs.get("photometric", np.ones(len(obs["residual"]), bool)))
    for k, b in enumerate(pi.bands):
        sel = (np.asarray(obs["band"]) == k) & reserved & photometric
        sel &= np.isfinite(obs["residual"]) & np.isfinite(obs["star_mag"])
        if sel.sum() < 10:
            continue
        mag, res = np.asarray(obs["star_mag"])[sel], np.asarray(obs["residual"])[sel]
        edges = np.quantile(mag, np.linspace(0, 1, 9))
        centres, rms = [], []
        for lo, hi in itertools.pairwise(edges):
            s = (mag >= lo) & (mag <= hi)
            if s.sum() >= 5:
                centres.append(np.median(mag[s]))
                # robust RMS (1.4826 MAD): a few outliers should not set the curve
                rms.append(1000 * 1.4826 * np.median(np.abs(res[s] - np.median(res[s]))))
        ax.plot(centres, rms, "o-", color=colors[b], label=b)
    ax.set_yscale("log")
    ax.set_xlabel("star standard magnitude")
    ax.set_ylabel("robust RMS of m - <m> (mmag)")
    ax.set_title("repeatability of reserved stars, photometric exposures")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _residual_map(plt, pi: ProductInputs, camera):
    obs = pi.obs
    if not obs or "fx_mm" not in obs or len(obs["residual"]) == 0:
        return None
    fig, axes = _grid(plt, len(pi.bands), width=4.2, height=3.8)
    photometric = np.asarray(obs.get("photometric", np.ones(len(obs["residual"]), bool)))
    for k, (ax, b) in enumerate(zip(axes, pi.bands)):
        sel = (np.asarray(obs["band"]) == k) & photometric & np.isfinite(obs["residual"])
        if sel.sum() < 10:
            ax.set_title(f"{b}: too few observations")
            continue
        # About 25 observations per cell, 6 to 30 cells across: the median of a cell is then
        # ~5x better than one observation.
        gridsize = int(np.clip(np.sqrt(sel.sum() / 25.0), 6, 30))
        hb = ax.hexbin(np.asarray(obs["fx_mm"])[sel], np.asarray(obs["fy_mm"])[sel],
                       C=1000 * np.asarray(obs["residual"])[sel], reduce_C_function=np.median,
                       gridsize=gridsize, cmap="RdBu_r", vmin=-5, vmax=5, mincnt=5)
        ax.set_aspect("equal")
        ax.set_title(f"{b}: median residual m - <m> (mmag)")
        ax.set_xlabel("focal plane x (mm)")
        ax.set_ylabel("y (mm)")
        fig.colorbar(hb, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig
