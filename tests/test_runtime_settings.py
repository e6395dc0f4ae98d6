"""Process-wide settings the command line applies at start: deterministic GPU kernels
(jaxfgcm.fit.reproducible) and the persistent compilation cache (jaxfgcm.fit.compilecache)."""

from __future__ import annotations

import logging

from jaxfgcm.fit import reproducible
from jaxfgcm.fit.compilecache import default_cache_dir, enable_compilation_cache
from jaxfgcm.fit.reproducible import FLAG, deterministic_gpu_ops, gpu_backend_possible


def test_deterministic_ops_are_added_to_the_users_flags(monkeypatch):
    monkeypatch.setattr(reproducible, "gpu_backend_possible", lambda: True)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert deterministic_gpu_ops()
    import os

    assert os.environ["XLA_FLAGS"] == f"{FLAG}=true"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert deterministic_gpu_ops()
    assert os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                               f"{FLAG}=true"]


def test_no_flag_where_no_gpu_backend_can_start(monkeypatch):
    import os

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(reproducible, "gpu_backend_possible", lambda: False)
    assert not deterministic_gpu_ops() and "XLA_FLAGS" not in os.environ
    monkeypatch.undo()
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert not gpu_backend_possible()  # whatever is installed


def test_an_explicit_choice_of_the_user_is_kept(monkeypatch):
    import os

    for value, expected in (("false", False), ("true", True), ("0", False)):
        flags = f"--xla_force_host_platform_device_count=2 {FLAG}={value}"
        monkeypatch.setenv("XLA_FLAGS", flags)
        assert deterministic_gpu_ops() is expected
        assert os.environ["XLA_FLAGS"] == flags  # untouched
    monkeypatch.setenv("XLA_FLAGS", FLAG)  # a bare boolean flag means true
    assert deterministic_gpu_ops() and os.environ["XLA_FLAGS"] == FLAG


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "jaxfgcm" / "xla"


def test_a_cache_that_cannot_be_created_only_warns(tmp_path, caplog):
    import jax

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    before = jax.config.jax_compilation_cache_dir
    # The handler goes on the module's own logger: the command line (run in-process by other
    # tests of this worker) stops "jaxfgcm" records from propagating to the root logger.
    logger = logging.getLogger("jaxfgcm.fit.compilecache")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="jaxfgcm.fit.compilecache"):
            assert enable_compilation_cache(blocker / "xla") is None
    finally:
        logger.removeHandler(caplog.handler)
    assert "cannot be created" in caplog.text and str(blocker / "xla") in caplog.text
    assert jax.config.jax_compilation_cache_dir == before  # nothing was turned on
