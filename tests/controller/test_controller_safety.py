"""The safety filter on its own: bounds, rate limit, non-finite guard, watchdog, counts."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from rtmpc.configs import ConfigError
from rtmpc.controller import Observation, SafetyConfig, SafetyFilter
from rtmpc.controller.safety import CLIPPED, NONFINITE_ACTION, NONFINITE_OBS, RATE_LIMITED, STALE_OBS, kinds_of


def obs(values=(0.0, 0.0), stamp=0.0, seq=0):
    return Observation(values=np.asarray(values, dtype=float), stamp=stamp, seq=seq)


def test_clips_to_the_bounds_and_flags_it():
    f = SafetyFilter([-1.0, 0.0], [1.0, 2.0], 0.1)
    assert f.filter(np.array([3.0, 1.0])) == CLIPPED
    assert f.action.tolist() == [1.0, 1.0]
    assert f.filter(np.array([0.5, 1.5], dtype=np.float32)) == 0
    assert f.action.tolist() == [0.5, 1.5]
    assert f.counts["clipped"] == 1


def test_rate_limit_is_a_fraction_of_the_range_per_second():
    f = SafetyFilter([-1.0], [1.0], 0.05, SafetyConfig(max_rate=2.0))  # 2 x 2 x 0.05 = 0.2 per cycle
    f.reset(0.0)
    sent = []
    for _ in range(6):
        flags = f.filter(np.array([1.0]))
        sent.append(f.action[0])
    assert sent == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert flags == 0 and f.counts["rate_limited"] == 4
    assert f.filter(np.array([-1.0])) == RATE_LIMITED and f.action[0] == pytest.approx(0.8)


def test_no_rate_limit_by_default():
    f = SafetyFilter([-1.0], [1.0], 0.01)
    assert f.filter(np.array([1.0])) == 0 and f.action[0] == 1.0
    assert f.filter(np.array([-1.0])) == 0 and f.action[0] == -1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_action_holds_the_last_action(bad):
    f = SafetyFilter([-1.0, -1.0], [1.0, 1.0], 0.1)
    f.filter(np.array([0.3, -0.2]))
    assert f.filter(np.array([bad, 0.0])) == NONFINITE_ACTION
    assert f.action.tolist() == [0.3, -0.2]


def test_nonfinite_action_can_send_the_safe_action():
    f = SafetyFilter([-1.0], [1.0], 0.1, SafetyConfig(nonfinite_action="safe", safe_action=(0.1,)))
    f.filter(np.array([0.9]))
    assert f.filter(np.array([np.nan])) == NONFINITE_ACTION and f.action[0] == 0.1


def test_observation_checks():
    f = SafetyFilter([-1.0], [1.0], 0.1, SafetyConfig(stale_after_s=0.25))
    f.reset(0.0)
    assert f.observe(obs(seq=1), 0.0) == 0
    assert f.observe(obs((np.nan, 0.0), seq=2), 0.1) == NONFINITE_OBS
    assert f.observe(obs(seq=2), 0.3) == 0  # same reading for 0.2 s
    assert f.observe(obs(seq=2), 0.4) == STALE_OBS  # 0.3 s
    assert f.observe(obs((np.inf, 0.0), seq=2), 0.5) == STALE_OBS | NONFINITE_OBS
    assert f.observe(obs(seq=3), 0.6) == 0


def test_stamp_age_and_default_age_of_three_periods():
    f = SafetyFilter([-1.0], [1.0], 0.1, SafetyConfig(stale_from="stamp"))
    assert f.stale_after_s == pytest.approx(0.3)
    assert f.observe(obs(stamp=10.0, seq=1), 10.29) == 0
    assert f.observe(obs(stamp=10.0, seq=2), 10.31) == STALE_OBS
    assert f.observe(obs(stamp=np.nan, seq=3), 10.31) == STALE_OBS


def test_substitute_sends_safe_or_holds():
    f = SafetyFilter([-1.0], [1.0], 0.1)
    f.filter(np.array([0.7]))
    assert f.substitute(STALE_OBS) == STALE_OBS and f.action[0] == 0.0
    g = SafetyFilter([-1.0], [1.0], 0.1, SafetyConfig(bad_observation="hold"))
    g.filter(np.array([0.7]))
    g.substitute(NONFINITE_OBS)
    assert g.action[0] == 0.7
    assert g.counts == {"clipped": 0, "rate_limited": 0, "nonfinite_action": 0, "nonfinite_obs": 1,
                        "stale_obs": 0, "nonfinite_model": 0, "plan_starved": 0}


def test_safe_action_defaults_and_validation():
    f = SafetyFilter([-1.0, 1.0], [1.0, 3.0], 0.1)
    assert f.safe_action.tolist() == [0.0, 2.0]  # zero where allowed, else mid-range
    assert SafetyFilter([-1.0], [1.0], 0.1, safe_action=np.array([0.5])).safe_action[0] == 0.5
    with pytest.raises(ValueError, match="inside the bounds"):
        SafetyFilter([-1.0], [1.0], 0.1, SafetyConfig(safe_action=(2.0,)))
    with pytest.raises(ValueError, match="2 entries"):
        SafetyFilter([-1.0, -1.0], [1.0, 1.0], 0.1, SafetyConfig(safe_action=(0.0,)))
    with pytest.raises(ValueError, match="low <= high"):
        SafetyFilter([1.0], [-1.0], 0.1)
    with pytest.raises(ConfigError, match="max_rate"):
        SafetyConfig(max_rate=-1.0)
    with pytest.raises(ConfigError, match="stale_from"):
        SafetyConfig(stale_from="wall")


def test_emergency_resets_the_rate_limit_origin():
    f = SafetyFilter([-1.0], [1.0], 0.1, SafetyConfig(max_rate=1.0, safe_action=(-1.0,)))
    f.reset(0.0)
    assert f.emergency()[0] == -1.0
    f.filter(np.array([1.0]))
    assert f.action[0] == pytest.approx(-0.8)


def test_each_kind_logs_once_when_it_starts(caplog):
    f = SafetyFilter([-1.0], [1.0], 0.1)
    with caplog.at_level(logging.WARNING, logger="rtmpc.controller.safety"):
        for _ in range(3):
            f.filter(np.array([np.nan]))
        f.filter(np.array([0.0]))
        f.filter(np.array([np.nan]))
    assert len(caplog.records) == 2 and "nonfinite_action" in caplog.records[0].getMessage()
    assert f.counts["nonfinite_action"] == 4


def test_kinds_of():
    assert kinds_of(CLIPPED | STALE_OBS) == ["clipped", "stale_obs"]


def test_the_filter_warms_every_kernel_variant_its_cycles_call():
    """The first control cycle must compile or load nothing: a read-only bound is another
    Numba type, and warming on other arrays left tick 0 loading it (3.2 ms at a 500 Hz servo)."""
    from rtmpc.controller.kernels import all_finite, filter_action

    low, high = np.array([-1.0, -2.0]), np.array([1.0, 2.0])
    low.flags.writeable = high.flags.writeable = False  # as a model's or task's bounds come
    for config in (SafetyConfig(), SafetyConfig(max_rate=5.0, nonfinite_action="safe")):
        filt = SafetyFilter(low, high, 0.01, config)
        before = (len(filter_action.signatures), len(all_finite.signatures))
        filt.reset(0.0)
        for dtype in (np.float64, np.float32):
            filt.filter(np.array([0.5, 3.0], dtype=dtype))
            values = np.array([0.1, 0.2, 0.3], dtype=dtype)
            filt.observe(Observation(values=values, stamp=0.0, seq=1), 0.0)
            values.flags.writeable = False  # a bridge's observation: a view of its message
            filt.observe(Observation(values=values, stamp=0.0, seq=2), 0.0)
        assert (len(filter_action.signatures), len(all_finite.signatures)) == before
