"""Each planner has its own config, chosen by ``kind`` when a run config is loaded."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from rtmpc.configs import ConfigError, from_dict, load, to_dict
from rtmpc.planners import CEMConfig, MPPIConfig, PlannerConfig, planner_config, registry, with_kind
from rtmpc.scripts.runconfig import RunConfig


def test_every_registered_planner_has_its_own_config_named_by_its_kind():
    assert set(registry.names()) == {"cem", "mppi"}
    for name in registry.names():
        cls = registry.config_class(name)
        assert issubclass(cls, PlannerConfig) and cls is not PlannerConfig
        assert cls().kind == name and registry.PLANNERS[name].config_class is cls


def test_fields_belong_to_the_planner_that_reads_them():
    assert "temperature" in MPPIConfig.field_names() and "temperature" not in CEMConfig.field_names()
    with pytest.raises(TypeError):
        CEMConfig(temperature=0.3)
    with pytest.raises(ConfigError, match="too few for CEM"):
        CEMConfig(elites=1)
    assert MPPIConfig(elites=0).elites == 0  # MPPI: 0 = weigh every sample
    with pytest.raises(ConfigError, match="shared part"):
        PlannerConfig()


def test_a_mapping_builds_the_config_its_kind_names():
    cfg = from_dict(RunConfig, {"planner": {"kind": "mppi", "temperature": 0.3, "horizon": 7}})
    assert type(cfg.planner) is MPPIConfig and cfg.planner.temperature == 0.3 and cfg.planner.horizon == 7
    assert type(from_dict(RunConfig, {}).planner) is CEMConfig
    assert type(from_dict(RunConfig, {"planner": {"horizon": 7}}).planner) is CEMConfig
    with pytest.raises(ConfigError, match=r"planner.kind = 'ilqr' is not a planner: choose one of cem, mppi"):
        from_dict(RunConfig, {"planner": {"kind": "ilqr"}})
    with pytest.raises(ConfigError, match=r"unknown key planner.temprature: MPPIConfig has"):
        from_dict(RunConfig, {"planner": {"kind": "mppi", "temprature": 0.3}})
    with pytest.raises(ConfigError, match="planner.elites = 1 is too few for CEM"):
        from_dict(RunConfig, {"planner": {"kind": "cem", "elites": 1}})


def test_another_planners_key_is_dropped_with_a_warning(caplog):
    """Run configs saved before each planner had its own config carry MPPI's temperature under
    CEM: they still load (and resume), and the log says the key is ignored."""
    with caplog.at_level(logging.WARNING):
        cfg = from_dict(RunConfig, {"planner": {"kind": "cem", "temperature": 0.5, "samples": 50, "elites": 5}})
    assert type(cfg.planner) is CEMConfig and cfg.planner.samples == 50
    assert "planner.temperature applies to mppi only; the cem planner ignores it" in caplog.text
    assert "temperature" not in to_dict(cfg)["planner"]


def test_an_override_switches_the_planner_and_keeps_the_shared_fields(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("planner:\n  kind: cem\n  horizon: 9\n  samples: 64\n  elites: 8\n")
    cfg = load(RunConfig, path, overrides=["planner.kind=mppi", "planner.temperature=0.2"])
    assert type(cfg.planner) is MPPIConfig
    assert (cfg.planner.horizon, cfg.planner.samples, cfg.planner.temperature) == (9, 64, 0.2)


def test_with_kind_carries_the_shared_fields_and_defaults_the_rest():
    mppi = planner_config("mppi", horizon=5, samples=30, elites=0, temperature=0.1, noise_beta=0.4)
    cem = with_kind(mppi, "cem", elites=4)
    assert type(cem) is CEMConfig and (cem.horizon, cem.samples, cem.elites, cem.noise_beta) == (5, 30, 4, 0.4)
    back = with_kind(cem, "mppi")
    assert back.temperature == MPPIConfig().temperature  # the old MPPI's own field is not remembered
    assert with_kind(mppi, "mppi", horizon=6) == dataclasses.replace(mppi, horizon=6)
