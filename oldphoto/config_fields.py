"""The fields of a config dataclass (a train or eval module's Config / EvalConfig) as the command line sets and lists
them: `build` makes an instance from KEY=VALUE strings, each value typed by its field (so no model needs options of
its own), and `describe` lists the fields with their types, defaults and comments (the project's convention: each
field line ends with a `# comment` saying what it is).
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

from .errors import SettingsError

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}
_NONE = {"none", "null", ""}


class BadValue(SettingsError):
    """A KEY=VALUE pair that cannot set its field: `reason`, and the field's `key` (None: the pair is not KEY=VALUE).
    Other problems (an unknown key, settings the dataclass refuses) are plain SettingsErrors."""

    def __init__(self, reason: str, key: str | None = None):
        self.reason = reason
        self.key = key
        super().__init__(reason if key is None else f"{key}: {reason}")


def _convert(value: str, tp: Any, key: str) -> Any:
    """`value` as the field type `tp`: int, float, bool, str, Path, Literal, X | None, tuple/list of those."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value.strip().lower() in _NONE:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, key)
            except BadValue as e:
                errors.append(e.reason)
        raise BadValue("; ".join(errors), key)
    if origin is typing.Literal:
        for option in args:
            if str(option) == value:
                return option
        raise BadValue(f"expected one of {', '.join(map(str, args))}, got {value!r}", key)
    if origin in (tuple, list):
        parts = [p.strip() for p in value.strip().strip("()[]").split(",") if p.strip()]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(parts) != len(args):
                raise BadValue(f"expected {len(args)} comma-separated values, got {value!r}", key)
            items = [_convert(p, a, key) for p, a in zip(parts, args)]
        else:
            elem = args[0] if args else str
            items = [_convert(p, elem, key) for p in parts]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise BadValue(f"expected true or false, got {value!r}", key)
    if tp in (int, float):
        try:
            return tp(value)
        except ValueError:
            raise BadValue(f"expected {tp.__name__}, got {value!r}", key) from None
    if tp is str:
        return value
    if isinstance(tp, type) and issubclass(tp, Path):
        return Path(value).expanduser()
    raise BadValue(f"a field of type {tp} cannot be set from the command line", key)


def _field_comments(cls: type) -> dict[str, str]:
    """Trailing `# comment` of each field line in the class source (the project's config convention)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    lines = source.splitlines()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                m = re.match(r"\s*(\w+)\s*:", lines[tok.start[0] - 1])
                if m and tok.start[1] > m.end():
                    comments.setdefault(m.group(1), tok.string.lstrip("#").strip())
    except tokenize.TokenError:
        return comments
    return comments


def _config_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "(required)"


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "").replace("pathlib.", "")


def build(cls: type, pairs: tuple[str, ...], defaults: dict[str, Any] | None = None) -> Any:
    """An instance of the dataclass `cls` from "key=value" strings, each typed by its field ("-" in a key reads as
    "_"), over `defaults`. BadValue for a pair that cannot set its field, SettingsError for an unknown key or
    settings the dataclass refuses."""
    fields = dict((f.name, tp) for f, tp in _config_fields(cls))
    values: dict[str, Any] = dict(defaults or {})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise BadValue(f"expected KEY=VALUE, got {pair!r}")
        if key not in fields:
            raise SettingsError(f"unknown key {key!r} for {cls.__module__}.{cls.__qualname__}; "
                                f"valid keys: {', '.join(fields)}")
        values[key] = _convert(value, fields[key], key)
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise SettingsError(f"invalid settings: {e}") from None


def describe(cls: type, defaults: dict[str, Any] | None = None) -> str:
    """The fields of `cls` with their defaults (those in `defaults` replacing the dataclass's, as the command uses
    them) and comments, one line each."""
    comments = _field_comments(cls)
    defaults = defaults or {}
    rows = []
    for f, tp in _config_fields(cls):
        note = f.metadata.get("help") or comments.get(f.name, "")
        default = defaults[f.name] if f.name in defaults else _field_default(f)
        rows.append((f.name, _type_name(tp), repr(default), note))
    w = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    lines = [f"{cls.__module__}.{cls.__qualname__} (set with --set KEY=VALUE):"]
    for name, tp, default, note in rows:
        line = f"  {name:<{w[0]}}  {tp:<{w[1]}}  = {default:<{w[2]}}" + (f"  # {note}" if note else "")
        lines.append(line.rstrip())
    return "\n".join(lines)
