"""Typed configuration: YAML files loaded into frozen, validated dataclasses.

Every component declares its options as a frozen dataclass whose fields are made
with :func:`param` (default, one-line doc, allowed range or choices). Building the
dataclass validates every field, so a bad value fails when the object is made, with
a message that names the key, the value and what is allowed::

    @dataclass(frozen=True)
    class HorizonConfig(Config):
        horizon: int = param(30, "planning horizon in model steps", ge=1, le=1000)

    HorizonConfig(horizon=0)
    # ConfigError: horizon = 0 is out of range: must be >= 1 and <= 1000

:func:`load` reads a YAML file, applies ``--set key.path=value`` overrides and builds
the nested dataclasses; an unknown key lists the keys that exist.

The YAML files that ship with rtmpc sit beside this module (``configs/*.yaml``).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "param",
    "from_dict",
    "to_dict",
    "load",
    "parse_overrides",
    "table",
    "shipped",
    "CONFIG_DIR",
]

CONFIG_DIR = Path(__file__).resolve().parent
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message says which and how to fix it."""


def param(
    default: Any,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Iterable[Any] | None = None,
) -> Any:
    """A dataclass field with a one-line doc and the values it may take."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt,
            "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (list, dict)):
        raise TypeError("use a tuple or a nested Config as a default, not a mutable value")
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _bounds_text(meta: Mapping[str, Any]) -> str:
    parts = []
    for key, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if meta.get(key) is not None:
            parts.append(f"{op} {meta[key]:g}")
    return "must be " + " and ".join(parts)


def _check_field(name: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{name} = {value!r} is not allowed: choose one of {', '.join(map(repr, choices))}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} = {value!r} is not a finite number")
        lo_ok = (meta.get("ge") is None or value >= meta["ge"]) and (meta.get("gt") is None or value > meta["gt"])
        hi_ok = (meta.get("le") is None or value <= meta["le"]) and (meta.get("lt") is None or value < meta["lt"])
        if not (lo_ok and hi_ok):
            raise ConfigError(f"{name} = {value!r} is out of range: {_bounds_text(meta)}")


class Config:
    """Mixin for frozen config dataclasses: validates every field when built."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(f.name, value, hints.get(f.name, Any))
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
            _check_field(f.name, coerced, f.metadata)
        self.check()

    def check(self) -> None:
        """Cross-field checks; override and raise ConfigError naming the fields."""

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; widen int to float and lists to tuples."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name} = {value!r} has the wrong type")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} = {value!r} should be a list")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        if len(args) == 2 and args[1] is Ellipsis or len(args) <= 1:
            return tuple(_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{name} = {value!r} should have {len(args)} entries")
        return tuple(_coerce(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return from_dict(tp, value, prefix=name)
        raise ConfigError(f"{name} should be a mapping of {_type_name(tp)} fields, got {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} = {value!r} should be a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{name} = {value!r} should be a whole number")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} = {value!r} should be true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} = {value!r} should be a string")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build config dataclass ``cls`` from a mapping; unknown keys and bad values are errors."""
    data = dict(data or {})
    where = f"{prefix}." if prefix else ""
    tagged = getattr(cls, "tagged", None)
    if tagged is not None:  # a tagged union: the mapping names its class (a planner config's kind)
        cls, data = tagged(data, where)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key {where}{unknown[0]}: {cls.__name__} has {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(f"{where}{key}", value, hints[key])
    try:
        return cls(**kwargs)
    except ConfigError as err:
        msg = str(err)
        raise ConfigError(f"{where}{msg}" if where and not msg.startswith(where) else msg) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists for tuples) suitable for YAML."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    return plain(cfg)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["planner.horizon=20", "seed=3"]`` -> nested dict; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} should look like key.path=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(keys):
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {k}")
        node[keys[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def shipped(name: str) -> Path:
    """Path of a config that ships with rtmpc, by file name or stem (``pets_cartpole``)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    return CONFIG_DIR / f"{stem}.yaml"


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a ConfigError that names it."""
    p = Path(path)
    if not p.exists() and not p.suffix and shipped(p.name).exists():
        p = shipped(p.name)
    if not p.exists():
        raise ConfigError(f"config file {path} not found (shipped configs: "
                          f"{', '.join(sorted(q.stem for q in CONFIG_DIR.glob('*.yaml')))})")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} should hold a mapping of keys, not {type(data).__name__}")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = (),
         extra: Mapping[str, Any] | None = None) -> T:
    """Load ``cls`` from a YAML file (or defaults), then ``extra`` and ``--set`` overrides."""
    data = read_yaml(path) if path is not None else {}
    if extra:
        data = _merge(data, extra)
    data = _merge(data, parse_overrides(overrides))
    return from_dict(cls, data)


def table(cfg: Any, title: str | None = None, skip: tuple[str, ...] = ()) -> str:
    """The resolved config as an aligned two-column table, one row per leaf field, without
    the top-level sections named in ``skip``."""
    rows: list[tuple[str, str]] = []

    def walk(v: Any, prefix: str) -> None:
        for f in dataclasses.fields(v):
            value = getattr(v, f.name)
            key = f"{prefix}{f.name}"
            if not prefix and f.name in skip:
                continue
            if dataclasses.is_dataclass(value):
                walk(value, key + ".")
            else:
                rows.append((key, repr(value) if isinstance(value, str) else str(value)))

    walk(cfg, "")
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title] if title else []
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
