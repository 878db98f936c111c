"""Strict validation of JSON values against the provider SDKs' request types.

`check(typ, value)` walks `value` (as parsed from JSON) against a typing annotation taken from
an official SDK (`openai.types…Params`, `anthropic.types…Param`) and returns every problem as
``"<path>: <message>"``, e.g. ``messages[0].content[1].type: must be one of 'text', 'image'``.
An empty list means the value is acceptable. Paths name top-level fields without a leading dot
and the value itself as ``(root)``.

Rules:
- TypedDict: unknown keys are errors (unless the SDK marked the class with
  ``set_pydantic_config(cls, {"extra": "allow"})``), required keys must be present
  (``Required`` / ``NotRequired`` / class totality, inherited keys included).
- pydantic models (the SDKs accept response objects in a few params): their fields, strictly.
- Union / Optional: valid if any member accepts. Otherwise, for members that are objects told
  apart by a ``Literal`` discriminator (``type``, ``role``, …) the problems of the member the
  discriminator selects are reported; else the closest member's problems or a compact
  ``must be a string or an array`` message.
- Literal: exact values (``True`` does not match ``1``). ``bool`` is not an ``int``; an ``int``
  is accepted for ``float``.
- List / Sequence / Iterable / SequenceNotStr: JSON arrays. Dict[str, X]: JSON objects.
- ``object`` / ``Any``: anything. Annotated is unwrapped; forward references are resolved.
"""

from __future__ import annotations

import collections.abc
import contextlib
import json
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, ForwardRef, Literal, Union

import typing_extensions

__all__ = ["check"]

_NoneType = type(None)
_REQUIRED = {typing.Required, typing_extensions.Required}
_NOT_REQUIRED = {typing.NotRequired, typing_extensions.NotRequired}
_LITERAL = {Literal, typing_extensions.Literal}
_ARRAY_ORIGINS = {
    list, tuple, set, frozenset,
    collections.abc.Sequence, collections.abc.MutableSequence, collections.abc.Iterable,
    collections.abc.Collection, collections.abc.Set,
}
_OBJECT_ORIGINS = {dict, collections.abc.Mapping, collections.abc.MutableMapping}
_DISCRIMINATORS = ("type", "role")

# JSON kinds, for compact messages and union pre-selection.
_OBJECT, _ARRAY, _STRING, _INT, _NUMBER, _BOOL, _NULL, _ANY = (
    "an object", "an array", "a string", "an integer", "a number", "a boolean", "null", "any")


@dataclass(frozen=True)
class _Field:
    typ: Any
    required: bool


@dataclass(frozen=True)
class _ObjectInfo:
    fields: dict[str, _Field]
    extra_allowed: bool


_objects: dict[Any, _ObjectInfo] = {}
_unions: dict[Any, tuple[Any, ...]] = {}


def check(typ: object, value: object, path: str = "") -> list[str]:
    """Every problem of `value` against annotation `typ`, as ``"<path>: <message>"`` strings."""
    problems: list[str] = []
    _check(typ, value, path, problems)
    return problems


def _at(path: str) -> str:
    return path or "(root)"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unwrap(typ: Any) -> Any:
    while True:
        if isinstance(typ, str):
            typ = ForwardRef(typ)
        if isinstance(typ, ForwardRef):
            typ = _resolve_ref(typ)
            continue
        origin = typing.get_origin(typ)
        if origin is typing.Annotated or origin in _REQUIRED or origin in _NOT_REQUIRED:
            typ = typing.get_args(typ)[0]
            continue
        if hasattr(typ, "__value__") and type(typ).__name__ == "TypeAliasType":
            typ = typ.__value__
            continue
        return typ


def _resolve_ref(ref: ForwardRef) -> Any:
    module = getattr(ref, "__forward_module__", None)
    namespace: dict[str, Any] = {}
    if module:
        mod = sys.modules.get(module if isinstance(module, str) else getattr(module, "__name__", ""))
        if mod is not None:
            namespace = vars(mod)
    try:
        return eval(ref.__forward_arg__, namespace)  # noqa: S307 - SDK annotation text
    except Exception:
        return object


def _is_typeddict(typ: Any) -> bool:
    return isinstance(typ, type) and typing_extensions.is_typeddict(typ)


def _is_model(typ: Any) -> bool:
    return isinstance(typ, type) and hasattr(typ, "model_fields") and hasattr(typ, "model_config")


def _object_info(typ: Any) -> _ObjectInfo:
    info = _objects.get(typ)
    if info is not None:
        return info
    fields: dict[str, _Field] = {}
    if _is_typeddict(typ):
        try:
            hints = typing.get_type_hints(typ, include_extras=True)
        except Exception:
            hints = {k: _unwrap_safe(v) for k, v in typ.__annotations__.items()}
        required_keys: frozenset[str] = getattr(typ, "__required_keys__", frozenset())
        for name, hint in hints.items():
            origin = typing.get_origin(hint)
            if origin in _REQUIRED:
                required = True
            elif origin in _NOT_REQUIRED:
                required = False
            else:
                required = name in required_keys
            fields[name] = _Field(hint, required)
        config = getattr(typ, "__pydantic_config__", None) or {}
        extra_allowed = config.get("extra") == "allow"
    else:
        for name, field in typ.model_fields.items():
            fields[field.alias or name] = _Field(field.annotation, field.is_required())
        extra_allowed = False
    info = _ObjectInfo(fields, extra_allowed)
    _objects[typ] = info
    return info


def _unwrap_safe(typ: Any) -> Any:
    try:
        return _unwrap(typ)
    except Exception:
        return object


# The JSON kind of a value by its Python type, first match wins (a bool is also an int).
_VALUE_KINDS = ((type(None), _NULL), (bool, _BOOL), (int, _INT), (float, _NUMBER), (str, _STRING), (list, _ARRAY),
                (dict, _OBJECT))


def _kind(value: object) -> str:
    return next((kind for typ, kind in _VALUE_KINDS if isinstance(value, typ)), type(value).__name__)


def _kinds(typ: Any) -> set[str]:
    """JSON kinds a (non-union) annotation can accept."""
    typ = _unwrap(typ)
    origin = typing.get_origin(typ)
    if typ is Any or typ is object:
        return {_ANY}
    if typ is None or typ is _NoneType:
        return {_NULL}
    if origin in _LITERAL:
        return {_kind(a) for a in typing.get_args(typ)}
    if origin is Union or origin is types.UnionType:
        return set().union(*(_kinds(m) for m in typing.get_args(typ)))
    if origin in _ARRAY_ORIGINS or _is_sequence_not_str(origin):
        return {_ARRAY}
    if origin in _OBJECT_ORIGINS or _is_typeddict(typ) or _is_model(typ) or typ in (dict,):
        return {_OBJECT}
    if typ is bool:
        return {_BOOL}
    if typ is int:
        return {_INT}
    if typ is float:
        return {_INT, _NUMBER}
    if typ is str:
        return {_STRING}
    if typ in (list, tuple):
        return {_ARRAY}
    return set()


def _is_sequence_not_str(origin: Any) -> bool:
    return getattr(origin, "__name__", "") == "SequenceNotStr"


def _literal_repr(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else json.dumps(value)


def _check(typ: Any, value: object, path: str, out: list[str]) -> None:
    typ = _unwrap(typ)
    if typ is Any or typ is object:
        return
    origin = typing.get_origin(typ)
    if typ is None or typ is _NoneType:
        if value is not None:
            out.append(f"{_at(path)}: must be null")
        return
    if origin in _LITERAL:
        allowed = typing.get_args(typ)
        if not any(value == a and type(value) is type(a) for a in allowed):
            if len(allowed) == 1:
                out.append(f"{_at(path)}: must be {_literal_repr(allowed[0])}")
            else:
                out.append(f"{_at(path)}: must be one of {', '.join(_literal_repr(a) for a in allowed)}")
        return
    if origin is Union or origin is types.UnionType:
        _check_union(typ, value, path, out)
        return
    if origin in _ARRAY_ORIGINS or _is_sequence_not_str(origin) or typ in (list, tuple):
        if not isinstance(value, list):
            out.append(f"{_at(path)}: must be an array")
            return
        args = typing.get_args(typ)
        item = args[0] if args else object
        if origin is tuple and args and args[-1] is not Ellipsis:
            item = Union[args]  # noqa: UP007 - runtime union of the tuple's members
        for i, element in enumerate(value):
            _check(item, element, f"{path}[{i}]", out)
        return
    if origin in _OBJECT_ORIGINS or typ is dict:
        if not isinstance(value, dict):
            out.append(f"{_at(path)}: must be an object")
            return
        args = typing.get_args(typ)
        item = args[1] if len(args) == 2 else object
        for k, v in value.items():
            if not isinstance(k, str):
                out.append(f"{_at(path)}: keys must be strings")
                continue
            _check(item, v, _join(path, k), out)
        return
    if _is_typeddict(typ) or _is_model(typ):
        _check_object(typ, value, path, out)
        return
    if typ is bool:
        if not isinstance(value, bool):
            out.append(f"{_at(path)}: must be a boolean")
        return
    if typ is int:
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"{_at(path)}: must be an integer")
        return
    if typ is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            out.append(f"{_at(path)}: must be a number")
        return
    if typ is str:
        if not isinstance(value, str):
            out.append(f"{_at(path)}: must be a string")
        return
    if isinstance(typ, type):
        if not isinstance(value, typ):
            out.append(f"{_at(path)}: must be {typ.__name__}")
        return
    if typing.get_origin(typ) is not None and isinstance(origin, type):
        if not isinstance(value, origin):
            out.append(f"{_at(path)}: must be {origin.__name__}")
        return


def _check_object(typ: Any, value: object, path: str, out: list[str]) -> None:
    if not isinstance(value, dict):
        out.append(f"{_at(path)}: must be an object")
        return
    info = _object_info(typ)
    for key in _DISCRIMINATORS:
        tag = _discriminator_values(typ, key)
        if tag is not None and key in value and not any(
                value[key] == o and type(value[key]) is type(o) for o in tag[0]):
            _check(info.fields[key].typ, value[key], _join(path, key), out)
            return
    for key, declared in info.fields.items():
        if declared.required and key not in value:
            out.append(f"{_join(path, key)}: required field missing")
    for key, item in value.items():
        found = info.fields.get(key)
        if found is None:
            if not info.extra_allowed:
                out.append(f"{_join(path, str(key))}: unknown field")
            continue
        _check(found.typ, item, _join(path, key), out)


def _members(typ: Any) -> tuple[Any, ...]:
    cached = None
    with contextlib.suppress(TypeError):
        cached = _unions.get(typ)
    if cached is not None:
        return cached
    flat: list[Any] = []
    for member in typing.get_args(typ):
        member = _unwrap(member)
        if typing.get_origin(member) is Union or typing.get_origin(member) is types.UnionType:
            flat.extend(_members(member))
        else:
            flat.append(member)
    result = tuple(flat)
    with contextlib.suppress(TypeError):
        _unions[typ] = result
    return result


def _discriminator_values(member: Any, key: str) -> tuple[tuple[object, ...], bool] | None:
    """The Literal values `member` allows under `key` and whether the key is required."""
    if not (_is_typeddict(member) or _is_model(member)):
        return None
    field = _object_info(member).fields.get(key)
    if field is None:
        return None
    literal = _unwrap(field.typ)
    options: list[object] = []
    candidates = _members(literal) if typing.get_origin(literal) in (Union, types.UnionType) else (literal,)
    for candidate in candidates:
        if typing.get_origin(candidate) in _LITERAL:
            options.extend(typing.get_args(candidate))
        elif candidate is not _NoneType:
            return None
    return (tuple(options), field.required) if options else None


def _check_union(typ: Any, value: object, path: str, out: list[str]) -> None:
    members = _members(typ)
    attempts: list[tuple[Any, list[str]]] = []
    kind = _kind(value)
    for member in members:
        problems: list[str] = []
        _check(member, value, path, problems)
        if not problems:
            return
        attempts.append((member, problems))
    matching = [
        (m, p) for m, p in attempts
        if (ks := _kinds(m)) and (kind in ks or _ANY in ks or (kind == _INT and _NUMBER in ks))
    ]
    if not matching:
        expected: list[str] = []
        for member in members:
            for k in sorted(_kinds(member)):
                if k not in expected and k != _ANY:
                    expected.append(k)
        if _NUMBER in expected and _INT in expected:
            expected.remove(_INT)
        literals = [a for m in members if typing.get_origin(m) in _LITERAL for a in typing.get_args(m)]
        if literals and all(typing.get_origin(m) in _LITERAL for m in members):
            out.append(f"{_at(path)}: must be one of {', '.join(_literal_repr(a) for a in literals)}")
        else:
            out.append(f"{_at(path)}: must be {' or '.join(expected) or 'valid'}")
        return
    if len(matching) == 1:
        out.extend(matching[0][1])
        return
    if isinstance(value, dict):
        for key in _discriminator_keys([m for m, _ in matching]):
            selected: list[tuple[Any, list[str]]] = []
            allowed: list[object] = []
            optional: list[tuple[Any, list[str]]] = []
            for member, problems in matching:
                found = _discriminator_values(member, key)
                if found is None:
                    continue
                options, required = found
                allowed.extend(o for o in options if o not in allowed)
                if key in value and any(value[key] == o and type(value[key]) is type(o) for o in options):
                    selected.append((member, problems))
                elif not required:
                    optional.append((member, problems))
            if selected:
                out.extend(min(selected, key=lambda mp: len(mp[1]))[1])
                return
            if key not in value and optional:
                out.extend(min(optional, key=lambda mp: len(mp[1]))[1])
                return
            if key in value:
                where = _join(path, key)
                out.append(f"{where}: must be one of {', '.join(_literal_repr(a) for a in allowed)}")
            else:
                out.append(f"{_join(path, key)}: required field missing")
            return
    out.extend(min(matching, key=lambda mp: len(mp[1]))[1])


def _discriminator_keys(members: list[Any]) -> list[str]:
    """Keys that every object member declares as a Literal, preferred names first."""
    objects = [m for m in members if _is_typeddict(m) or _is_model(m)]
    if len(objects) < 2:
        return []
    common: list[str] | None = None
    for member in objects:
        keys = [k for k in _object_info(member).fields if _discriminator_values(member, k) is not None]
        common = keys if common is None else [k for k in common if k in keys]
    ordered = [k for k in _DISCRIMINATORS if k in (common or [])]
    return ordered + [k for k in (common or []) if k not in ordered]
