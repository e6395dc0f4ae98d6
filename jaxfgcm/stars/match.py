"""Cross-visit matching: define stars from the primary bands, attach every observation.

Positions are projected onto the gnomonic tangent plane of the tract centre (arcsec), where
all distances are Euclidean. Within a few degrees of the centre the projection stretches
distances by at most 1/cos^2(theta) - 1 (0.3 % at 3 deg, i.e. 3 mas on a 1" radius), far below
the astrometric jitter that the match radius has to absorb.

Algorithm (docs/stars.md gives the full rules and their counts):

1. Per primary band, in priority order, candidate stars are found in three linear steps:
   observations are binned on a grid of half the match radius ("micro-clusters": one sort),
   micro-cluster centroids closer than the match radius are linked (friends-of-friends on a
   k-d tree; each star has a handful of micro-clusters, so this is O(n_star)), and each group's
   mean position is a candidate star. A group is accepted as one star only if it is
   *consistent*: no visit appears twice and every member lies within the match radius of the
   mean (so that the final matching would give it all of them). Inconsistent groups (two stars closer than the radius, moving stars, outliers)
   are split by a greedy seed search restricted to the group (`_split_group`). Groups with
   fewer than ``min_obs`` observations define no star. Candidates of a later primary band
   within the match radius of an earlier band's star are dropped (the earlier band defines it).
2. Stars with another star within the isolation radius are removed, both members: their
   apertures overlap, so their photometry is contaminated.
3. Every observation (all bands) goes to its *nearest* candidate star within the match radius
   (k-d tree query); one observation never serves two stars. If a star receives two
   observations from one visit, the nearer is kept.

Cost: a sort plus k-d tree builds and queries, O(N log N) in the number of observations N; no
pairwise loops over observations. Only inconsistent groups take the (small) Python path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

ARCSEC_PER_RAD = 180.0 / np.pi * 3600.0
#: Groups up to this many observations are split with a dense neighbour matrix.
_DENSE_SPLIT_MAX = 256


# --------------------------------------------------------------------------------------------
# Tangent plane
# --------------------------------------------------------------------------------------------


def gnomonic(ra, dec, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (TAN) projection about (ra0, dec0); degrees in, arcsec out (float64).

    Points more than 90 deg from the centre have no projection and come back as NaN.
    """
    ra = np.radians(np.asarray(ra, dtype=np.float64))
    dec = np.radians(np.asarray(dec, dtype=np.float64))
    a0, d0 = np.radians(ra0), np.radians(dec0)
    cos_dec = np.cos(dec)
    sin_dec = np.sin(dec)
    dra = ra - a0
    cos_dra = np.cos(dra)
    cos_c = np.sin(d0) * sin_dec + np.cos(d0) * cos_dec * cos_dra
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(cos_c > 0, ARCSEC_PER_RAD / cos_c, np.nan)
    xi = cos_dec * np.sin(dra) * inv
    eta = (np.cos(d0) * sin_dec - np.sin(d0) * cos_dec * cos_dra) * inv
    return xi, eta


def inverse_gnomonic(xi, eta, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `gnomonic`: tangent-plane arcsec -> (ra, dec) degrees, ra in [0, 360)."""
    x = np.asarray(xi, dtype=np.float64) / ARCSEC_PER_RAD
    y = np.asarray(eta, dtype=np.float64) / ARCSEC_PER_RAD
    a0, d0 = np.radians(ra0), np.radians(dec0)
    denom = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, denom)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class MatchResult:
    """Stars and the observation -> star assignment.

    ``star_xi, star_eta``: candidate star positions (tangent plane, arcsec), one per candidate;
    ``star_band``: index (into the caller's band list) of the primary band that defined it;
    ``star_isolated``: False where another candidate lies within the isolation radius;
    ``obs_star``: per observation, the candidate star index, or -1 (no star within radius);
    ``obs_duplicate``: True for an observation that lost to a nearer one of the same visit;
    ``obs_distance``: arcsec to the assigned star (inf where none).
    ``counts``: diagnostic counts of the matching steps (groups split, candidates dropped).
    """

    star_xi: np.ndarray
    star_eta: np.ndarray
    star_band: np.ndarray
    star_isolated: np.ndarray
    obs_star: np.ndarray
    obs_duplicate: np.ndarray
    obs_distance: np.ndarray
    counts: dict


# --------------------------------------------------------------------------------------------
# Step 1: candidate stars of one band
# --------------------------------------------------------------------------------------------


def _group_observations(xi, eta, radius: float) -> np.ndarray:
    """Label observations so that one star's observations share a label (linear time).

    Observations are binned on a grid of ``radius / 2``; the bins' centroids are then linked
    when closer than ``radius`` (friends-of-friends on a k-d tree). Labels are 0..n_groups-1.
    """
    cell = radius / 2.0
    ix = np.floor(xi / cell).astype(np.int64)
    iy = np.floor(eta / cell).astype(np.int64)
    # Tangent-plane coordinates within a few degrees fit easily in 2^31 cells of 0.5".
    key = (ix << 32) ^ (iy & 0xFFFFFFFF)
    _, cell_of_obs, n_in_cell = np.unique(key, return_inverse=True, return_counts=True)
    n_cells = n_in_cell.size
    cx = np.bincount(cell_of_obs, weights=xi, minlength=n_cells) / n_in_cell
    cy = np.bincount(cell_of_obs, weights=eta, minlength=n_cells) / n_in_cell
    pairs = cKDTree(np.column_stack([cx, cy])).query_pairs(radius, output_type="ndarray")
    adjacency = scipy.sparse.coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n_cells, n_cells)
    )
    _, cell_label = connected_components(adjacency, directed=False)
    return cell_label[cell_of_obs]


def _split_group(x, y, visit, radius: float, min_obs: int) -> list[np.ndarray]:
    """Greedy star finding inside one inconsistent group; returns the members of each star.

    Repeatedly, the observation with the most unassigned neighbours within ``radius`` seeds a
    star; the star takes the unassigned neighbours of the seed, at most one per visit (the
    nearest to the seed). Stops when no seed has ``min_obs`` neighbours. Neighbour counts are a
    matrix-vector product (dense for small groups, sparse for large ones), so one iteration
    costs O(pairs in the group).
    """
    n = x.size
    if n <= _DENSE_SPLIT_MAX:
        # Small groups (the usual case): a dense neighbour matrix is cheapest.
        adjacency = ((x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
                     <= radius**2).astype(np.float64)

        def neighbours_of(i):
            return np.flatnonzero(adjacency[i])
    else:
        pairs = cKDTree(np.column_stack([x, y])).query_pairs(radius, output_type="ndarray")
        rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n)])
        cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n)])
        adjacency = scipy.sparse.csr_matrix(
            (np.ones(rows.size, dtype=np.float64), (rows, cols)), shape=(n, n)
        )

        def neighbours_of(i):
            return adjacency.indices[adjacency.indptr[i] : adjacency.indptr[i + 1]]

    free = np.ones(n, dtype=np.float64)
    stars = []
    while True:
        counts = adjacency @ free
        counts[free == 0] = -1
        seed = int(np.argmax(counts))  # ties -> lowest index: deterministic
        if counts[seed] < min_obs:
            break
        neighbours = neighbours_of(seed)
        neighbours = neighbours[free[neighbours] > 0]
        d2 = (x[neighbours] - x[seed]) ** 2 + (y[neighbours] - y[seed]) ** 2
        order = np.lexsort((d2, visit[neighbours]))
        sorted_visits = visit[neighbours][order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = sorted_visits[1:] != sorted_visits[:-1]
        members = neighbours[order[first]]
        if members.size < min_obs:
            # The seed's neighbours are repeats of few visits: retire the seed alone.
            free[seed] = 0
            continue
        free[members] = 0
        stars.append(members)
    return stars


def find_band_stars(xi, eta, visit, radius: float, min_obs: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Candidate star positions from the observations of one band.

    Returns ``(star_xi, star_eta, n_split_groups)``.
    """
    if xi.size == 0:
        return np.empty(0), np.empty(0), 0
    label = _group_observations(xi, eta, radius)
    n_groups = int(label.max()) + 1
    size = np.bincount(label, minlength=n_groups)
    mx = np.bincount(label, weights=xi, minlength=n_groups) / size
    my = np.bincount(label, weights=eta, minlength=n_groups) / size
    spread2 = (xi - mx[label]) ** 2 + (eta - my[label]) ** 2
    max_spread2 = np.zeros(n_groups)
    np.maximum.at(max_spread2, label, spread2)
    # A visit seen twice in a group means two sources (hence two stars) within the radius.
    order = np.lexsort((visit, label))
    sl, sv = label[order], visit[order]
    repeated = (sl[1:] == sl[:-1]) & (sv[1:] == sv[:-1])
    has_repeat = np.zeros(n_groups, dtype=bool)
    has_repeat[sl[1:][repeated]] = True
    consistent = ~has_repeat & (max_spread2 <= radius**2)

    good = consistent & (size >= min_obs)
    star_x = [mx[good]]
    star_y = [my[good]]
    bad_groups = np.flatnonzero(~consistent & (size >= min_obs))
    if bad_groups.size:
        # Members of each inconsistent group, contiguous after one sort.
        members_sorted = np.argsort(label, kind="stable")
        starts = np.concatenate([[0], np.cumsum(size)])
        for g in bad_groups:
            idx = members_sorted[starts[g] : starts[g + 1]]
            for members in _split_group(xi[idx], eta[idx], visit[idx], radius, min_obs):
                star_x.append([xi[idx][members].mean()])
                star_y.append([eta[idx][members].mean()])
    return np.concatenate(star_x), np.concatenate(star_y), int(bad_groups.size)


# --------------------------------------------------------------------------------------------
# Steps 1-3 over all bands
# --------------------------------------------------------------------------------------------


def match_observations(
    xi: np.ndarray,
    eta: np.ndarray,
    band_index: np.ndarray,
    visit: np.ndarray,
    primary_bands: list[int],
    radius: float,
    isolation_radius: float,
    min_obs: int,
) -> MatchResult:
    """Define stars from the primary bands and attach every observation to its nearest star.

    ``xi, eta``: tangent-plane arcsec (float64); ``band_index``: per observation;
    ``primary_bands``: band indices in priority order; radii in arcsec.
    """
    counts = {"groups_split": 0, "candidates_dropped_as_duplicates": 0}
    star_x = np.empty(0)
    star_y = np.empty(0)
    star_band = np.empty(0, dtype=np.int32)
    for b in primary_bands:
        sel = band_index == b
        bx, by, n_split = find_band_stars(xi[sel], eta[sel], visit[sel], radius, min_obs)
        counts["groups_split"] += n_split
        if star_x.size and bx.size:
            # The earlier (higher-priority) band already defines stars within the radius.
            d, _ = cKDTree(np.column_stack([star_x, star_y])).query(
                np.column_stack([bx, by]), distance_upper_bound=radius
            )
            new = ~np.isfinite(d)
            counts["candidates_dropped_as_duplicates"] += int((~new).sum())
            bx, by = bx[new], by[new]
        star_x = np.concatenate([star_x, bx])
        star_y = np.concatenate([star_y, by])
        star_band = np.concatenate([star_band, np.full(bx.size, b, dtype=np.int32)])

    n_star = star_x.size
    isolated = np.ones(n_star, dtype=bool)
    obs_star = np.full(xi.size, -1, dtype=np.int64)
    dist = np.full(xi.size, np.inf)
    duplicate = np.zeros(xi.size, dtype=bool)
    if n_star == 0:
        return MatchResult(star_x, star_y, star_band, isolated, obs_star, duplicate, dist, counts)

    tree = cKDTree(np.column_stack([star_x, star_y]))
    if isolation_radius > 0:
        pairs = tree.query_pairs(isolation_radius, output_type="ndarray")
        isolated[pairs.ravel()] = False

    # Nearest star within the radius; k-d tree queries run on all cores.
    dist, nearest = tree.query(
        np.column_stack([xi, eta]), distance_upper_bound=radius, workers=-1
    )
    matched = np.isfinite(dist)
    obs_star[matched] = nearest[matched]

    # One observation per (star, visit): the nearest wins. One integer sort finds the (rare)
    # repeated (star, visit) keys; only those are ordered by distance.
    idx = np.flatnonzero(matched)
    vmin = int(visit.min())
    span = int(visit.max()) - vmin + 1
    if n_star * span < 2**62:
        key = obs_star[idx] * span + (visit[idx] - vmin)
    else:  # huge visit ids: rank them first
        key = obs_star[idx] * (xi.size + 1) + np.unique(visit, return_inverse=True)[1][idx]
    sorted_key = np.sort(key)
    repeated_keys = np.unique(sorted_key[1:][sorted_key[1:] == sorted_key[:-1]])
    if repeated_keys.size:
        sub = idx[np.isin(key, repeated_keys)]
        sub_key = key[np.isin(key, repeated_keys)]
        order = np.lexsort((dist[sub], sub_key))
        k = sub_key[order]
        repeat = np.r_[False, k[1:] == k[:-1]]
        duplicate[sub[order[repeat]]] = True
    return MatchResult(star_x, star_y, star_band, isolated, obs_star, duplicate, dist, counts)
