"""Recovered vs true: compare a fit of a simulated repository with its ``truth/`` tables.

Figures (per band, after removing one constant per band: the absolute level is not constrained
without reference stars):

* ``zeropoint_rms``: RMS of fit minus true zeropoint over photometric (flag 1) visit/detectors
  that the simulation observed; ``zeropoint_rms_nonphotometric`` the same for flag-4 rows
  (cloudy exposures, gray corrected);
* ``star_mag_rms``: RMS of standard magnitude minus true standard magnitude for bright stars
  (magErr < BRIGHT_MAG_ERR), after a 5-sigma (robust) clip that ``n_clipped`` counts;
* ``flags``: cloudy visits flagged non-photometric, and clear visits wrongly flagged.

Both zeropoints are count-rate zeropoints of a flat-f_nu source (fit: ``m_std = m_inst +
zeropoint``; simulation: ``truth/zeropoints.parquet``), so the comparison needs no chromatic
term; stars are matched to the simulated objects through their sources' ``sourceId``.
"""

from __future__ import annotations

import numpy as np

#: Stars whose standard-magnitude error is below this (mag) enter the star comparison.
BRIGHT_MAG_ERR = 0.005


def compare_to_truth(repo, result, catalog, data, config) -> dict:
    """The recovered-vs-truth figures (module docstring) as a JSON-ready dict."""
    bands = tuple(data.bands)
    zp = _zeropoints(repo, result, data, bands)
    stars = _stars(repo, result, catalog, bands)
    out = {"bands": {b: {**zp.get(b, {}), **stars.get(b, {})} for b in bands},
           "flags": _flags(repo, result),
           "definitions": "RMS after removing the per-band median offset (mag)"}
    return out


def _rms(d: np.ndarray) -> float:
    return float(np.sqrt(np.mean(d * d))) if d.size else float("nan")


def _zeropoints(repo, result, data, bands) -> dict:
    t = repo.read_truth("zeropoints")
    camera_ids = np.asarray(repo.camera().ids)
    n_det = data.n_det
    fit_zp = np.asarray(result.zeropoint).ravel()
    fit_flag = np.asarray(result.zeropoint_flag).ravel()
    # fit row of each truth row: exposure-major (visit order of the fit), detector in camera order
    visit = np.asarray(result.visit)
    vpos = np.searchsorted(visit, t["visit"], sorter=np.argsort(visit))
    vrow = np.argsort(visit)[np.clip(vpos, 0, visit.size - 1)]
    drow = np.searchsorted(camera_ids, t["detector"], sorter=np.argsort(camera_ids))
    drow = np.argsort(camera_ids)[np.clip(drow, 0, camera_ids.size - 1)]
    ok = (visit[vrow] == t["visit"]) & (camera_ids[drow] == t["detector"])
    row = vrow * n_det + drow
    out = {}
    for band in bands:
        res = {}
        for name, flag in (("", 1), ("_nonphotometric", 4)):
            sel = ok & (np.asarray(t["band"]).astype(str) == band)
            sel &= (fit_flag[row] == flag) & np.isfinite(fit_zp[row])
            d = fit_zp[row[sel]] - np.asarray(t["zeropoint"])[sel]
            d = d - np.median(d) if d.size else d
            res[f"zeropoint_rms{name}"] = _rms(d)
            res[f"zeropoint_max{name}"] = float(np.max(np.abs(d))) if d.size else float("nan")
            res[f"n_zeropoints{name}"] = int(d.size)
        out[band] = res
    return out


def _stars(repo, result, catalog, bands) -> dict:
    import pyarrow.parquet as pq

    truth_obs = pq.read_table(repo.path / "truth" / "observations.parquet",
                              columns=["sourceId", "object_id"])
    sid = truth_obs.column("sourceId").to_numpy()
    oid = truth_obs.column("object_id").to_numpy()
    order = np.argsort(sid)
    obs = catalog.observations
    src = np.asarray(obs["source_id"])
    pos = np.clip(np.searchsorted(sid, src, sorter=order), 0, sid.size - 1)
    obj_of_obs = np.where(sid[order[pos]] == src, oid[order[pos]], -1)
    # A star's object: the one most of its observations come from (first observation suffices
    # for isolated stars; majority protects against a stray match).
    star_index = np.asarray(obs["star_index"])
    n_star = len(catalog.stars["ra"])
    star_obj = np.full(n_star, -1, dtype=np.int64)
    for s, o in _majority(star_index, obj_of_obs):
        star_obj[s] = o
    objects = repo.read_truth("objects")
    ids = np.asarray(objects["object_id"])
    opos = np.clip(np.searchsorted(ids, star_obj, sorter=np.argsort(ids)), 0, ids.size - 1)
    orow = np.argsort(ids)[opos]
    matched = (star_obj >= 0) & (ids[orow] == star_obj) & np.asarray(objects["is_star"])[orow]
    out = {}
    for k, band in enumerate(bands):
        col = f"mag_std_{band}"
        if col not in objects:
            continue
        mag = np.asarray(result.star_mag)[:, k]
        err = np.asarray(result.star_mag_err)[:, k]
        sel = matched & np.isfinite(mag) & (err < BRIGHT_MAG_ERR)
        d = mag[sel] - np.asarray(objects[col])[orow[sel]]
        if d.size == 0:
            out[band] = {"star_mag_rms": float("nan"), "n_stars": 0, "n_clipped": 0}
            continue
        d = d - np.median(d)
        sigma = 1.4826 * np.median(np.abs(d))
        keep = np.abs(d) <= max(5 * sigma, 1e-4)
        out[band] = {"star_mag_rms": _rms(d[keep]), "n_stars": int(keep.sum()),
                     "n_clipped": int((~keep).sum())}
    return out


def _majority(star_index: np.ndarray, obj: np.ndarray):
    good = obj >= 0
    if not good.any():
        return []
    pairs = np.stack([star_index[good], obj[good]], axis=1)
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    # for each star keep the object with the most observations
    order = np.lexsort((-counts, uniq[:, 0]))
    uniq = uniq[order]
    first = np.r_[True, uniq[1:, 0] != uniq[:-1, 0]]
    return uniq[first].tolist()


def _flags(repo, result) -> dict:
    v = repo.read_truth("visits")
    visit = np.asarray(result.visit)
    flags = np.asarray(result.exp_flags)
    pos = np.clip(np.searchsorted(visit, v["visit"], sorter=np.argsort(visit)), 0,
                  visit.size - 1)
    row = np.argsort(visit)[pos]
    ok = visit[row] == v["visit"]
    phot = np.asarray(v["photometric"]).astype(bool)[ok]
    flagged = flags[row[ok]] != 0
    return {"n_cloudy": int((~phot).sum()), "cloudy_flagged": int((~phot & flagged).sum()),
            "n_clear": int(phot.sum()), "clear_flagged": int((phot & flagged).sum())}
