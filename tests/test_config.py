import pytest

from jaxfgcm.config import Config, ConfigError, default_config_path, load_config


def test_hsc_yaml_spells_out_the_defaults():
    assert load_config(default_config_path()) == Config()


def test_override_and_errors(tmp_path):
    cfg = load_config(overrides=["fit.max_fit_cycles=3", "lut.pwv=[0.2, 8, 7]"])
    assert cfg.fit.max_fit_cycles == 3
    assert (cfg.lut.pwv.min, cfg.lut.pwv.max, cfg.lut.pwv.n) == (0.2, 8.0, 7)
    with pytest.raises(ConfigError, match="fit.nonsense"):
        load_config(overrides=["fit.nonsense=1"])
    with pytest.raises(ConfigError, match="site.latitude_deg"):
        load_config(overrides=["site.latitude_deg=north"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("site:\n  elevaton_m: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*site.elevaton_m"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    choice = tmp_path / "choice.yaml"
    choice.write_text("fit:\n  gauss_newton_normal: structure\n")
    with pytest.raises(ConfigError, match=r"choice.yaml.*fit.gauss_newton_normal.*one of "
                                          r"structured, generic.*'structure'"):
        load_config(choice)
    with pytest.raises(ConfigError, match="fit.optimizer"):
        load_config(overrides=["fit.optimizer=bfgs"])
    assert load_config(overrides=["fit.gauss_newton_normal=generic"]).fit.gauss_newton_normal \
        == "generic"


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.site.latitude_deg = 0.0  # type: ignore[misc]
