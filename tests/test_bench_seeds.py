"""The summary of scripts/bench_seeds.py (the truth bars over several simulated seeds): which
targets a run misses and the counts over seeds. The fits themselves are exercised by the
script (docs/fit.md quotes a run); here only the bookkeeping that decides "met"."""

import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def bench_seeds():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import bench_seeds
        yield bench_seeds
    finally:
        sys.path.remove(str(SCRIPTS))


def run(zp_g, bright_r, ratio_r, clouds):
    return {"zeropoint": {"g": zp_g, "r": 0.001}, "bright": {"g": 0.002, "r": bright_r},
            "ratio": {"g": 1.1, "r": ratio_r}, "clouds": clouds}


def test_misses_compare_each_bar_with_the_issues_target(bench_seeds):
    # the targets (2 mmag, 3 mmag, 1.2, 95 %) are met at equality and missed just above
    assert bench_seeds.misses(run(0.002, 0.003, 1.2, (21, 22))) == []
    assert bench_seeds.misses(run(0.00201, 0.0031, 1.21, (20, 22))) == [
        "zeropoint g 2.01", "bright r 3.10", "ratio r 1.210", "clouds 20/22"]
    # a band without a figure (NaN: too few bright stars) counts as a miss, not as met
    assert bench_seeds.misses(run(float("nan"), 0.001, 1.0, (5, 5))) == ["zeropoint g nan"]


def test_summary_counts_targets_over_seeds(bench_seeds, capsys):
    bench_seeds.summarise({1: run(0.0021, 0.004, 1.3, (21, 22)), 2: run(0.0011, 0.002, 1.1, (20, 22))})
    out = capsys.readouterr().out
    assert "targets met: 10/14" in out and "seeds with every target met: 0/2" in out
    assert "zeropoint g 1.60 r 1.00   all bands 1.30" in out
    assert "clouds flagged 41/44" in out


def test_compile_log_counts_the_programs_compiled_inside_it():
    """scripts/bench_fit.py's tally of a fit's XLA compiles: one program per new shape, none
    for a cached one, and the logger and the flag as they were afterwards."""
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(SCRIPTS))
    try:
        import bench_fit
    finally:
        sys.path.remove(str(SCRIPTS))

    def f(x):
        return jnp.sin(x) * 2.0 + 1.0

    was = jax.config.jax_log_compiles
    g = jax.jit(f)
    with bench_fit.compile_log() as programs:
        g(jnp.ones(7)).block_until_ready()
        g(jnp.ones(7)).block_until_ready()  # cached: no second compile
        g(jnp.ones(11)).block_until_ready()
    assert programs["jit(f)"][0] == 2 and programs["jit(f)"][1] > 0
    assert jax.config.jax_log_compiles == was
    import logging
    assert logging.getLogger("jax").propagate
