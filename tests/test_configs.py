"""Config loading: unknown keys, out-of-range values and overrides are named precisely."""

from dataclasses import dataclass

import pytest
from rtmpc.configs import Config, ConfigError, from_dict, load, param, parse_overrides, table, to_dict


@dataclass(frozen=True)
class Inner(Config):
    horizon: int = param(10, "steps", ge=1, le=100)
    kind: str = param("cem", "which", choices=("cem", "mppi"))


@dataclass(frozen=True)
class Outer(Config):
    seed: int = param(0, "seed", ge=0)
    lr: float = param(1e-3, "learning rate", gt=0)
    inner: Inner = param(Inner(), "nested")
    sizes: tuple[int, ...] = param((1, 2), "sizes")


def test_defaults_and_nesting():
    cfg = from_dict(Outer, {"inner": {"horizon": 5}, "lr": 1})
    assert cfg.inner.horizon == 5 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert to_dict(cfg)["inner"] == {"horizon": 5, "kind": "cem"}


def test_unknown_key_names_key_and_alternatives():
    with pytest.raises(ConfigError, match=r"unknown key inner\.horizn: Inner has horizon, kind"):
        from_dict(Outer, {"inner": {"horizn": 5}})


def test_out_of_range_names_key_value_and_range():
    with pytest.raises(ConfigError, match=r"inner\.horizon = 0 is out of range: must be >= 1 and <= 100"):
        from_dict(Outer, {"inner": {"horizon": 0}})


def test_bad_choice_and_type():
    with pytest.raises(ConfigError, match="inner.kind = 'pid' is not allowed"):
        from_dict(Outer, {"inner": {"kind": "pid"}})
    with pytest.raises(ConfigError, match="seed = 'x' should be a whole number"):
        from_dict(Outer, {"seed": "x"})
    with pytest.raises(ConfigError, match="lr = nan is not a finite number"):
        from_dict(Outer, {"lr": float("nan")})


def test_direct_construction_validates():
    with pytest.raises(ConfigError, match="horizon = -1"):
        Inner(horizon=-1)


def test_overrides_and_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\ninner:\n  horizon: 7\n")
    cfg = load(Outer, p, overrides=["inner.kind=mppi", "sizes=[4, 5]"])
    assert (cfg.seed, cfg.inner.horizon, cfg.inner.kind, cfg.sizes) == (3, 7, "mppi", (4, 5))
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}
    with pytest.raises(ConfigError, match="should look like key.path=value"):
        parse_overrides(["horizon"])
    assert "inner.horizon" in table(cfg)


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(Outer, p)
    with pytest.raises(ConfigError, match="not found"):
        load(Outer, tmp_path / "nope.yaml")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from rtmpc.configs.rundir import atomic_write, atomic_write_bytes

    target = atomic_write_bytes(tmp_path / "model.onnx", b"old")

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_table_leaves_out_skipped_top_level_sections_only():
    cfg = from_dict(Outer, {})
    text = table(cfg, skip=("inner",))
    assert "inner.horizon" not in text and "seed" in text and "sizes" in text


def test_run_listing_leaves_out_the_other_model_family():
    from rtmpc.scripts.runconfig import RunConfig
    latent_cfg, pets_cfg = from_dict(RunConfig, {"kind": "latent"}), from_dict(RunConfig, {})
    latent = table(latent_cfg, skip=latent_cfg.unused_sections())
    pets = table(pets_cfg, skip=pets_cfg.unused_sections())
    assert "latent.model.hidden" in latent and "pets.episodes" not in latent and "planner.horizon" in latent
    assert "pets.episodes" in pets and "latent.model.hidden" not in pets and "safety.max_rate" in pets
