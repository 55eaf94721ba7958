"""Typed configuration: dataclasses, dotted overrides, YAML files, and unknown-key errors."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from fewstep.errors import FewstepError


def to_dict(cfg: Any) -> dict:
    """Dataclass (possibly nested) -> plain JSON-serialisable dict."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a parsed value (from YAML or a CLI string) to the declared field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        errors = []
        for a in args:
            try:
                return _coerce(value, a, key)
            except FewstepError as e:
                errors.append(str(e))
        raise FewstepError(errors[0])
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise FewstepError(f"config key '{key}' expects a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = yaml.safe_load(value if value.startswith("[") else f"[{value}]")
        if not isinstance(value, (list, tuple)):
            raise FewstepError(f"config key '{key}' expects a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise FewstepError(f"config key '{key}' expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise FewstepError(f"config key '{key}' expects an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise FewstepError(f"config key '{key}' expects an integer, got {value!r}") from None
        if f != int(f):
            raise FewstepError(f"config key '{key}' expects an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise FewstepError(f"config key '{key}' expects a number, got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict; unknown keys are errors that list the valid ones."""
    types_ = _field_types(cls)
    unknown = set(data) - set(types_)
    if unknown:
        key = sorted(unknown)[0]
        raise FewstepError(
            f"unknown config key '{prefix}{key}'; valid keys here: {', '.join(sorted(types_))}"
        )
    kwargs = {k: _coerce(v, types_[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise FewstepError(f"invalid config for '{prefix.rstrip('.') or cls.__name__}': {e}") from None


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise FewstepError(f"config key '{dotted}': '{p}' is not a section")
    node[parts[-1]] = value


def parse_overrides(pairs: list[str]) -> dict:
    """['train.steps=100', 'method.cfg_scale=2'] -> nested dict (values parsed as YAML scalars)."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise FewstepError(f"override '{pair}' must look like key=value (e.g. train.steps=100)")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise FewstepError(f"override '{pair}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(out, key, value)
    return out


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FewstepError(f"config file '{p}' does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise FewstepError(f"config file '{p}' is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise FewstepError(f"config file '{p}' must hold a mapping at the top level")
    return data
