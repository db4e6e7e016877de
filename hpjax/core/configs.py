"""Config machinery shared by both papers: ``--set key=value`` overrides, presets, JSON round trip.

Configs are frozen dataclasses (``hpjax.hpnet.config.AttributesConfig``,
``hpjax.image_score.config.SemiConfig``); this module knows none of their fields.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from hpjax.core.errors import ConfigError


def _not_none(hint: Any) -> Any:
  """``X`` of ``X | None`` (``hint`` itself otherwise)."""
  args = typing.get_args(hint)
  if type(None) in args:
    return next(a for a in args if a is not type(None))
  return hint


def _parse_value(field: dataclasses.Field, text: str, type_hints: dict[str, Any]) -> Any:
  hint = type_hints[field.name]
  try:
    if type(None) in typing.get_args(hint):  # X | None
      if text.lower() in ("none", ""):
        return None
      hint = _not_none(hint)
    if typing.get_origin(hint) is tuple:
      return tuple(typing.get_args(hint)[0](t) for t in text.split(",") if t.strip())
    if hint is bool:
      if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError(text)
      return text.lower() in ("true", "1")
    return hint(text)
  except ValueError:
    raise ConfigError(f"--set {field.name}={text}: expected a value of type {hint}") from None


def override(config: Any, assignments: list[str]) -> Any:
  """Applies ``key=value`` overrides (``--set``) to a frozen config."""
  fields = {f.name: f for f in dataclasses.fields(config)}
  hints = typing.get_type_hints(type(config))
  changes = {}
  for a in assignments:
    key, sep, value = a.partition("=")
    if not sep:
      raise ConfigError(f"--set {a}: expected key=value")
    if key not in fields:
      raise ConfigError(f"--set {a}: unknown config field {key!r}; fields: {', '.join(fields)}")
    changes[key] = _parse_value(fields[key], value, hints)
  return dataclasses.replace(config, **changes)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
  """Rebuilds a config saved as JSON (lists back to tuples)."""
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for f in dataclasses.fields(cls):
    if f.name in data:
      v = data[f.name]
      is_tuple = typing.get_origin(_not_none(hints[f.name])) is tuple
      kwargs[f.name] = tuple(v) if is_tuple and isinstance(v, list) else v
  return cls(**kwargs)


def preset(presets: dict[str, Any], name: str) -> Any:
  if name not in presets:
    raise ConfigError(f"--config {name}: unknown preset; choose from {', '.join(presets)}")
  return presets[name]
