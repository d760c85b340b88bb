"""The config as JSON (config.json): nested dicts by group, and back; a flat file from
before the groups loads too (`nest`)."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from tensorf.config import FLAT_GROUPS, OPTION_GROUPS, TrainConfig


def to_dict(cfg: Any) -> dict:
    """A config as JSON-ready nested dicts (paths as strings, tuples as lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def flat_dict(cfg: TrainConfig) -> dict:
    """`to_dict` with each option of a flat group at the top, by its name: the layout of
    config.json before the options were grouped (model, render, distributed stay nested)."""
    values = {}
    for name, value in to_dict(cfg).items():
        values.update(value if name in FLAT_GROUPS else {name: value})
    return values


def nest(values: dict) -> dict:
    """A config.json's values with the options a flat (old) file has at the top moved into
    their groups; a grouped file comes back as it is."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        if name in OPTION_GROUPS:
            nested.setdefault(OPTION_GROUPS[name], {})[name] = value
        else:
            nested[name] = value
    return nested


def from_dict(cls: type, values: dict) -> Any:
    """Inverse of `to_dict` for a config dataclass; a TrainConfig also from a flat (old)
    config.json (`nest`). Raises TypeError for a value of the wrong JSON type (a corrupt or
    hand-edited file)."""
    if cls is TrainConfig:
        values = nest(values)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, hint = values[f.name], hints[f.name]
        if not _json_matches(value, hint):
            raise TypeError(f"'{f.name}' is {value!r}, which is not a {hint}")
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value)
        elif isinstance(value, str) and Path in (hint, *typing.get_args(hint)):
            value = Path(value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _json_matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value can stand for a field of type `hint`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_json_matches(value, arg) for arg in args)
    if origin is tuple and isinstance(value, int) and set(args) == {int}:
        return True  # component counts from before they were given per axis pair
    if origin is tuple:
        items = args[:1] * len(value) if args[-1:] == (...,) else args
        return isinstance(value, list) and len(items) == len(value) and all(
            _json_matches(v, a) for v, a in zip(value, items, strict=True))  # fmt: skip
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, Path):
        return isinstance(value, str)
    return True
