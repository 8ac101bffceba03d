"""Strict dataclass configs: unknown keys are an error, not a silent no-op."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration with unknown keys or values of the wrong kind."""


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with a helpful message.

    Nested dataclass fields are built recursively from nested dicts.
    """
    where = where or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, fields, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(hints)}; allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    hints_by_name = _resolved_types(cls)
    for key, value in data.items():
        ftype = hints_by_name.get(key)
        if dataclasses.is_dataclass(ftype) and isinstance(value, dict):
            value = from_dict(ftype, value, f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _resolved_types(cls) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {f.name: f.type for f in dataclasses.fields(cls)}


def read_toml(path, error: type[Exception] = ConfigError, _seen: tuple = ()) -> dict[str, Any]:
    """Parse a TOML file; a missing or malformed file raises ``error`` naming it.

    A top-level ``extends = "other.toml"`` (relative to this file's folder) starts from that file
    and merges this one over it: tables key by key, any other value (arrays such as
    ``[[data.sources]]`` included) replaced whole. Chains are followed; a cycle is an error."""
    import tomllib
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise error(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"cannot parse {path}: {exc}") from None
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str) or not base_name:
        raise error(f"{path}: extends must name a TOML file, got {base_name!r}")
    key = path.resolve()
    if key in _seen:
        raise error(f"{path}: extends forms a cycle ({' -> '.join(p.name for p in (*_seen, key))})")
    base = read_toml(path.parent / base_name, error, (*_seen, key))
    try:
        return deep_merge(base, raw)
    except ConfigError as exc:
        raise error(f"{path}: {exc}") from None


def deep_merge(base: dict, overrides: dict) -> dict:
    """Merge nested ``overrides`` into a copy of ``base``: tables key by key, other values replaced
    (None values are skipped). A section of ``base`` that is not a table (``train = 5``) under a
    table of ``overrides`` is an error, never silently replaced."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict):
            current = out.get(key, {})
            if not isinstance(current, dict):
                raise ConfigError(f"[{key}] must be a table, got {type(current).__name__} {current!r}")
            out[key] = deep_merge(current, value)
        else:
            out[key] = value
    return out


def to_dict(obj) -> dict[str, Any]:
    return dataclasses.asdict(obj)
