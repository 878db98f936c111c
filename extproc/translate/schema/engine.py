"""The type-table checker's nodes: how a parsed JSON value is judged against a compiled type, sans-IO.

`grammar.compile_table` builds a tree (a graph: types may recur) of these nodes from a client
API's table. How a value is judged (`grammar.Checker.check`; the first problem is raised as
`Invalid`, its path built on the way out):
- JSON kinds exactly: a boolean is not an integer, an integer is a number, `1.0` is not an
  integer; every integer fits in 64 bits unless a rule narrows it; `num` is finite (JSON has no
  infinity).
- Objects: a declared field is checked; a field the type does not declare is an extension and is
  not judged (only its depth); null for an optional field counts as absent; a required field must
  be present and not null (unless its type takes null).
- Unions: the members that take the value's JSON kind are tried. Objects told apart by a literal
  tag (`type`, `role`) are dispatched on it: a known tag selects its members, a missing tag the
  members that do not require one, and an unknown tag string is an extension (a newer block or tool
  version: the provider, or the translator to another API, judges it) — but a tag that is not a
  string is an error naming the tag. An object type with a required tag is judged the same way
  where it stands alone (an array of one block type).
- String literals are an open set (a newer enum value passes, as new tags do) unless a rule
  closes the field; boolean literals are booleans.
- Depth: nothing may nest deeper than `MAX_DEPTH` containers, wherever it is (orjson parses 1,024
  levels but encodes only 254, and translation adds a few).
- Bounds (`Bound`, from the rules): numbers between `lo` and `hi`, strings and arrays between
  `lo` and `hi` items.

Nodes are built once per table and never change after `grammar.compile_table` returns; checking
keeps no state in them, so one tree serves every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 64
INT64 = (-(2**63), 2**63 - 1)
_KIND_NAMES = {"str": "a string", "int": "an integer", "num": "a number", "bool": "a boolean",
               "array": "an array", "object": "an object", "null": "null"}
_KINDS = {str: "str", bool: "bool", int: "int", float: "num", dict: "object", list: "array", type(None): "null"}
_MAX_SHOWN = 40
_TOO_DEEP = f"is nested more than {MAX_DEPTH} levels deep"


class Invalid(Exception):  # noqa: N818 - a verdict, not a failure of the checker
    """The first problem found: `path` (``messages[0].content``), `problem` (a phrase that follows
    the path), `missing` (a required field is absent) and `kind` ("type" or "value").

    Paths are built only on failure: each container the problem is inside adds its segment
    (`inside`) as the exception passes through it."""

    def __init__(self, path: str, problem: str, *, missing: bool = False, kind: str = "value") -> None:
        super().__init__(problem)
        self._segments = [path] if path else []
        self.problem, self.missing, self.kind = problem, missing, kind

    def inside(self, segment: str) -> Invalid:
        self._segments.append(segment)
        return self

    def progress(self) -> tuple[int, list[int], bool]:
        """How far the check got before this problem: path depth, then the array indices along
        it, then a value problem (its type was right) over a type problem."""
        indices = [int(seg[1:-1]) if seg.startswith("[") else 0 for seg in reversed(self._segments)]
        return len(self._segments), indices, self.kind == "value"

    @property
    def path(self) -> str:
        out = ""
        for seg in reversed(self._segments):
            out += seg if seg.startswith("[") or not out else "." + seg
        return out

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class Bound:
    """A documented range: numbers lo ≤ x ≤ hi; strings and arrays lo ≤ len ≤ hi (None: open)."""

    lo: float | None = None
    hi: float | None = None


def kind(value: Any) -> str:
    """The JSON kind of a parsed value: str, int, num, bool, object, array or null."""
    k = _KINDS.get(type(value))
    if k is not None:
        return k
    for t, name in _KINDS.items():  # a subclass (not from a JSON parser, but take it)
        if isinstance(value, t):
            return "bool" if isinstance(value, bool) else name
    return "null"


def show(text: str) -> str:
    """`text` shortened for an error message (a client's 5 MB key is not echoed back)."""
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "..."


def _kinds_phrase(kinds: tuple[str, ...] | list[str]) -> str:
    names = [_KIND_NAMES[k] for k in dict.fromkeys(kinds)]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _wrong_kind(expected: tuple[str, ...], value: Any) -> Invalid:
    return Invalid("", f"expected {_kinds_phrase(expected)}, got {_KIND_NAMES[kind(value)]}", kind="type")


def walk_depth(value: Any, depth: int) -> None:
    """`value` (anything, at nesting level `depth`) nests no deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise Invalid("", _TOO_DEEP)
    for v in value.values() if type(value) is dict else value:
        if isinstance(v, dict | list):
            walk_depth(v, depth + 1)


def _number(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:g}"


def _range_problem(lo: float | None, hi: float | None, unit: str | None) -> str:
    if unit is not None:
        if lo == 1 and hi is None:
            return "must not be empty"
        if lo is not None and hi is not None:
            return f"must have between {_number(lo)} and {_number(hi)} {unit}"
        return f"must have at least {_number(lo)} {unit}" if lo is not None else \
            f"must have at most {_number(hi or 0)} {unit}"
    if lo is not None and hi is not None:
        return f"must be between {_number(lo)} and {_number(hi)}"
    return f"must be at least {_number(lo)}" if lo is not None else f"must be at most {_number(hi or 0)}"


class Node:
    """A compiled type. `check(value, depth)` raises `Invalid` (path relative to value);
    `depth` is value's nesting level (the body is 1)."""

    kinds: tuple[str, ...] = ()

    def check(self, value: Any, depth: int) -> None:
        raise NotImplementedError


class AnyValue(Node):
    kinds = ("str", "int", "num", "bool", "array", "object", "null")

    def check(self, value: Any, depth: int) -> None:
        if isinstance(value, dict | list):
            walk_depth(value, depth)


class Prim(Node):
    def __init__(self, name: str, bound: Bound | None = None) -> None:
        self.name = name
        self.kinds = ("int", "num") if name == "num" else (name,)
        self.types = {t for t, k in _KINDS.items() if k in self.kinds}
        lo, hi = INT64 if name == "int" else (None, None)
        user_lo, user_hi = (bound.lo, bound.hi) if bound else (None, None)
        self.lo = user_lo if user_lo is not None else lo
        self.hi = user_hi if user_hi is not None else hi
        self.problem = _range_problem(self.lo, self.hi, "characters" if name == "str" else None)

    def check(self, value: Any, depth: int) -> None:
        if type(value) not in self.types and kind(value) not in self.kinds:
            raise _wrong_kind(self.kinds, value)
        if self.lo is None and self.hi is None:
            return
        measure = len(value) if self.name == "str" else value
        if (self.lo is not None and measure < self.lo) or (self.hi is not None and measure > self.hi):
            raise Invalid("", self.problem)


class Lit(Node):
    """Literal values: open (their JSON kinds) unless `closed` (exactly these values)."""

    def __init__(self, values: list[Any], closed: bool) -> None:
        self.values = values
        self.closed = closed
        self.kinds = tuple(dict.fromkeys(kind(v) for v in values))

    def check(self, value: Any, depth: int) -> None:
        if kind(value) not in self.kinds:
            raise _wrong_kind(self.kinds, value)
        if self.closed and value not in self.values:
            raise Invalid("", "must be one of " + ", ".join(f"'{v}'" for v in self.values))


class Arr(Node):
    kinds = ("array",)

    def __init__(self, item: Node, bound: Bound | None = None) -> None:
        self.item = item
        self.lo, self.hi = (bound.lo, bound.hi) if bound else (None, None)

    def check(self, value: Any, depth: int) -> None:
        if type(value) is not list:
            raise _wrong_kind(self.kinds, value)
        if depth > MAX_DEPTH:
            raise Invalid("", _TOO_DEEP)
        n = len(value)
        if (self.lo is not None and n < self.lo) or (self.hi is not None and n > self.hi):
            raise Invalid("", _range_problem(self.lo, self.hi, "items"))
        check, depth = self.item.check, depth + 1
        i = 0
        try:
            for i, v in enumerate(value):  # noqa: B007 - i names the failing item
                check(v, depth)
        except Invalid as e:
            raise e.inside(f"[{i}]") from None


class Map(Node):
    kinds = ("object",)

    def __init__(self, item: Node) -> None:
        self.item = item

    def check(self, value: Any, depth: int) -> None:
        if type(value) is not dict:
            raise _wrong_kind(self.kinds, value)
        if depth > MAX_DEPTH:
            raise Invalid("", _TOO_DEEP)
        check, depth = self.item.check, depth + 1
        k = ""
        try:
            for k, v in value.items():  # noqa: B007 - k names the failing value
                check(v, depth)
        except Invalid as e:
            raise e.inside(show(k)) from None


@dataclass
class FieldSpec:
    node: Node
    required: bool
    nullable: bool


class Obj(Node):
    kinds = ("object",)

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, FieldSpec] = {}
        self.required: tuple[str, ...] = ()
        self.tag_key: str | None = None
        self.tags: list[Any] = []

    def set_fields(self, fields: dict[str, FieldSpec]) -> None:
        self.fields = fields
        self.required = tuple(k for k, f in fields.items() if f.required)
        for key in ("type", "role"):
            values = self.tag(key)
            if values is not None and fields[key].required:
                self.tag_key, self.tags = key, values
                break

    def check(self, value: Any, depth: int) -> None:
        if type(value) is not dict:
            raise _wrong_kind(self.kinds, value)
        if depth > MAX_DEPTH:
            raise Invalid("", _TOO_DEEP)
        if self.tag_key is not None:
            tag = value.get(self.tag_key)
            if type(tag) is str and tag not in self.tags:  # another kind of object: an extension
                walk_depth(value, depth)
                return
        fields, inner = self.fields, depth + 1
        k = ""
        try:
            for k, v in value.items():
                f = fields.get(k)
                if f is None:
                    if type(v) is dict or type(v) is list:
                        walk_depth(v, inner)
                elif v is not None or f.nullable:
                    f.node.check(v, inner)
        except Invalid as e:
            raise e.inside(show(k)) from None
        for k in self.required:
            if value.get(k) is None and not (k in value and fields[k].nullable):
                raise Invalid(k, "is required", missing=True)

    def tag(self, key: str) -> list[Any] | None:
        """The literal values of field `key` when it is one, else None."""
        f = self.fields.get(key)
        node = f.node if f else None
        if isinstance(node, Union) and len(node.members) == 1:  # an optional tag: "=custom|null"
            node = node.members[0]
        return node.values if isinstance(node, Lit) else None


class Union(Node):
    def __init__(self, members: list[Node], nullable: bool) -> None:
        self.members = members
        self.nullable = nullable
        self.kinds = tuple(dict.fromkeys(k for m in members for k in m.kinds))
        self.by_kind: dict[str, list[Node]] = {k: [m for m in members if k in m.kinds] for k in self.kinds}
        self.tag_key: str | None = None
        self.by_tag: dict[str, list[Obj]] = {}
        self.untagged: list[Obj] = []

    def resolve_tags(self) -> None:
        """Find the tag key of this union's object members (after every Obj has its fields)."""
        objects = [m for m in self.by_kind.get("object", ()) if isinstance(m, Obj)]
        if len(objects) < 2 or len(objects) != len(self.by_kind["object"]):
            return
        for key in ("type", "role"):
            tags = [o.tag(key) for o in objects]
            if sum(t is not None for t in tags) < 2:
                continue
            self.tag_key = key
            for o, values in zip(objects, tags, strict=True):
                if values is None or not o.fields[key].required:
                    self.untagged.append(o)
                for v in values or ():
                    self.by_tag.setdefault(v, []).append(o)
            return

    def check(self, value: Any, depth: int) -> None:
        if value is None:
            if self.nullable:
                return
            raise _wrong_kind(self.kinds, value)
        k = kind(value)
        candidates: list[Node] | list[Obj] | None = self.by_kind.get(k)
        if not candidates:
            raise _wrong_kind(self.kinds, value)
        if len(candidates) == 1:
            candidates[0].check(value, depth)
            return
        if k == "object" and self.tag_key is not None:
            tag = value.get(self.tag_key)
            if tag is None:
                candidates = self.untagged
                if not candidates:
                    raise Invalid(self.tag_key, "is required", missing=True)
            elif type(tag) is str and tag in self.by_tag:
                candidates = self.by_tag[tag]
            elif type(tag) is str:  # an extension (a newer block, tool or part type)
                walk_depth(value, depth)
                return
            else:
                raise _wrong_kind(("str",), tag).inside(self.tag_key)
        best: Invalid | None = None  # the member that got furthest (`Invalid.progress`)
        for member in candidates:
            try:
                member.check(value, depth)
                return
            except Invalid as e:
                if best is None or e.progress() > best.progress():
                    best = e
        assert best is not None
        raise best
