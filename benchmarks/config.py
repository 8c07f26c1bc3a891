"""Method configs: dataclasses whose every field is settable from a matrix, checked on the way in.

:func:`build_config` makes a config dataclass from its defaults and a mapping of overrides,
checking every override against its field's annotation (:func:`check_value`), recursively for
nested configs (a backbone's, an identifier's); errors name the class, the field and what was
expected in words (:func:`describe_type`). The matrix reader, the dataset catalog and every
method use it; it imports nothing of the suite but its errors.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

from benchmarks.errors import ConfigError

_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          type(None): "null", dict: "a mapping", Path: "a path (a string)"}
_PLURAL = {bool: "booleans", int: "integers", float: "numbers", str: "strings", Path: "paths"}


def describe_type(annotation: Any) -> str:
    """A field annotation in words, for error messages: ``int | None`` -> "an integer or null",
    ``tuple[float, ...]`` -> "a list of numbers", ``Literal["auto"]`` -> "'auto'"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in args if not (a is str and Path in args)]   # a path is a string
        return " or ".join(describe_type(a) for a in kinds)
    if origin is typing.Literal:
        return repr(args[0]) if len(args) == 1 else f"one of {', '.join(repr(a) for a in args)}"
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:
            kinds = {a for a in args}
            if len(kinds) == 1:
                item = args[0]
                return f"a list of {len(args)} {_PLURAL.get(item, describe_type(item))}"
            return f"a list ({', '.join(describe_type(a) for a in args)})"
        item = args[0] if args else Any
        return "a list" if item is Any else f"a list of {_PLURAL.get(item, describe_type(item))}"
    if origin is dict:
        return "a mapping"
    return _WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


class _Mismatch(Exception):
    """A value that does not fit an annotation (internal to :func:`check_value`)."""


def _fit(value: Any, annotation: Any) -> Any:
    """``value`` as the annotation wants it (a list for a tuple field becomes a tuple; an int
    is a float; nothing else is converted), or _Mismatch."""
    if annotation is Any:
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            try:
                return _fit(value, a)
            except _Mismatch:
                pass
        raise _Mismatch
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Mismatch
    if origin in (tuple, list) or annotation in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch
            items = [_fit(v, a) for v, a in zip(value, args)]
        else:
            item = args[0] if args else Any
            items = [_fit(v, item) for v in value]
        return tuple(items) if (origin or annotation) is tuple else list(items)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        if args:
            return {_fit(k, args[0]): _fit(v, args[1]) for k, v in value.items()}
        return value
    if annotation is type(None):
        if value is None:
            return value
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is Path:
        if isinstance(value, (str, os.PathLike)):
            return value
        raise _Mismatch
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise _Mismatch
    raise TypeError(f"no type check for the annotation {annotation!r}")


def check_value(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against a field annotation (int, float accepting ints, bool, str,
    None / Optional, unions, Literal, tuple[...] / list[...] accepting lists, dict, Path,
    Any); a mismatch is a ConfigError "<where>: expected <type in words>, got <value> (<type>)"."""
    try:
        return _fit(value, annotation)
    except _Mismatch:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ConfigError(f"{where}: expected {describe_type(annotation)}, got {shown} "
                          f"({type(value).__name__})") from None


def build_config(cls: type, overrides: dict[str, Any] | None) -> Any:
    """Instantiate the dataclass ``cls`` from its defaults and ``overrides``.

    Every override is checked against its field's annotation (:func:`check_value`); an unknown
    key or a wrong type is a ConfigError naming the class, the field and what was expected.
    A config whose dict fields hold other configs (a backbone's, an identifier's) says which
    through a ``nested_configs()`` method returning {field: dataclass}; those dicts are
    checked the same way, recursively (it raises ConfigError "field 'x': ..." for a field
    that picks an unknown nested config)."""
    overrides = dict(overrides or {})
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(known), key=str)
    if unknown:
        raise ConfigError(f"{cls.__qualname__}: unknown field(s) {', '.join(map(str, unknown))}; "
                          f"known: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    for name, value in overrides.items():
        overrides[name] = check_value(value, hints[name], f"{cls.__qualname__}: field {name!r}")
    config = cls(**overrides)
    nested = getattr(config, "nested_configs", None)
    try:   # a field that picks the nested config (``identifier``, ``backbone``) may be wrong
        subs = nested() if nested else {}
    except ConfigError as exc:
        raise ConfigError(f"{cls.__qualname__}: {exc}") from None
    for name, sub in subs.items():
        try:
            build_config(sub, getattr(config, name) or {})
        except ConfigError as exc:
            raise ConfigError(f"{cls.__qualname__}: field {name!r}: {exc}") from None
    return config
