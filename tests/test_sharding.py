"""Sharding the observation axis (jaxfgcm.fit.sharding) changes nothing but the rounding of
partial sums: chi2, its gradient, the standard magnitudes and a short fit on 2 and 3 (forced CPU)
devices equal the single-device result. Runs in a subprocess because the device count is fixed
when JAX starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(r"""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jaxfgcm.config import Config
    from jaxfgcm.fit import FitParams, FitState, chi2, free_mask, minimize
    from jaxfgcm.fit.model import standard_magnitudes
    from jaxfgcm.fit.synthetic import make_synthetic
    from jaxfgcm.fit.sharding import obs_mesh, replicate, shard_fit_data, shard_fit_state

    cfg = Config().with_overrides(["instrument.bands=[g,r,i]", "fit.fit_bands=[g,r,i]",
                                   "fit.min_star_per_exp=50"])
    data, lut, truth = make_synthetic(cfg, n_stars=300, n_nights=2, visits_per_night=6,
                                      n_det=4, seed=3)
    state = FitState(sed_slope=truth["sed_slope"],
                     obs_use=data.obs_valid & jnp.asarray(truth["photometric"])[data.obs_exp],
                     sigma_fgcm=jnp.zeros(data.n_bands))
    p0 = FitParams.standard(data, cfg.standard_atmosphere, cfg.fit.sed_slope_scale)
    mask = free_mask(data)
    vg = jax.jit(jax.value_and_grad(chi2))
    mags = jax.jit(standard_magnitudes)

    def run(d, s, p, l):
        v, g = vg(p, d, l, s)
        m = mags(p, d, l, s.sed_slope)[:data.n_obs]
        fit, _ = minimize(chi2, p, mask, (d, l, s), method="lbfgs", max_iter=3)
        return (float(v), [np.asarray(x) for x in jax.tree_util.tree_leaves(g)], np.asarray(m),
                [np.asarray(x) for x in jax.tree_util.tree_leaves(fit)])

    ref = run(data, state, p0, lut)  # every array on device 0
    out = {"n_devices": jax.device_count(), "meshes": []}
    for n in (2, jax.device_count()):
        mesh = obs_mesh(jax.devices()[:n])
        d = shard_fit_data(data, mesh)
        s = shard_fit_state(state, d, mesh)
        got = run(d, s, replicate(p0, mesh), replicate(lut, mesh))
        out["meshes"].append({
            "n": n,
            "obs_len": int(d.obs_mag.shape[0]),
            "obs_len_in": int(data.obs_mag.shape[0]),
            "shards": len(d.obs_mag.sharding.device_set),
            "chi2_rel": abs(got[0] / ref[0] - 1),
            # relative to the largest gradient element (some elements are ~0 +- rounding)
            "grad_rel": max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in
                            zip(got[1], ref[1])) / max(float(np.max(np.abs(b), initial=0.0))
                                                       for b in ref[1]),
            "mag_abs": float(np.max(np.abs(got[2] - ref[2]))),
            "fit_abs": max(float(np.max(np.abs(a - b), initial=0.0))
                           for a, b in zip(got[3], ref[3])),
            "fit_moved": max(float(np.max(np.abs(a - b), initial=0.0))
                             for a, b in zip(ref[3], jax.tree_util.tree_leaves(p0))),
        })
    print("RESULT " + json.dumps(out))
""")


def test_sharded_fit_equals_single_device():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=3")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["n_devices"] == 3
    for m in out["meshes"]:
        assert m["shards"] == m["n"]
        assert m["obs_len"] % m["n"] == 0 and m["obs_len"] >= m["obs_len_in"]
        assert m["chi2_rel"] < 1e-9, m  # float64 chi2: only the order of partial sums differs
        assert m["grad_rel"] < 1e-9, m
        assert m["mag_abs"] < 1e-6, m  # mag
        assert m["fit_moved"] > 1e-3, m  # the short fit did move the parameters ...
        assert m["fit_abs"] < 1e-6, m  # ... to the same place
    # 3 devices do not divide the 4096-row padding: zero-weight rows were added
    assert out["meshes"][1]["obs_len"] > out["meshes"][1]["obs_len_in"]
