"""Type tables as data, and their compilation into `engine` nodes.

A table (`sdk_*.py`, generated from the SDK types; `rules.py`, the gateway's own additions) maps
each object type's name to its fields and each field to a type expression:

    expr    := member ("|" member)*               a union
    member  := "str" | "int" | "num" | "bool" | "null" | "any"
             | "true" | "false" | "=" value       a literal (a string value: "=text")
             | "[" expr "]"                       an array of expr
             | "{" expr "}"                       an object whose every value is expr
             | Name                               an object type of the table
    field   := "!" expr (required) | expr

`compile_table` reads a table once, with its `Rules`, into a `Checker`; a rule that names no
field, or a type name with no table entry, is an error then (at import), not at request time.
Checkers are immutable and shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from extproc.translate.schema.engine import (
    AnyValue,
    Arr,
    Bound,
    FieldSpec,
    Lit,
    Map,
    Node,
    Obj,
    Prim,
    Union,
)

_PRIMITIVES = ("str", "int", "num", "bool", "null", "any", "true", "false")


def literal(value: Any) -> str:
    """A literal's expression (the generator writes literals with it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value and not any(c in value for c in "|[]{}=! "):
        return f"={value}"
    raise ValueError(f"no literal expression for {value!r}")


def split_union(expr: str) -> list[str]:
    """The top-level members of `expr`."""
    out, depth, start = [], 0, 0
    for i, c in enumerate(expr):
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "|" and depth == 0:
            out.append(expr[start:i])
            start = i + 1
    out.append(expr[start:])
    return out


@dataclass(frozen=True)
class Rules:
    """What the gateway adds to an SDK table: `bounds` per "Type.field" (or "Type.field.*" for a
    map's values, "Type.field[]" for an array's items), `closed` literal fields, `extra` fields
    per type (fields the SDK dropped that clients still send), and `checks` run on the whole body
    after the table (rules that span fields)."""

    bounds: Mapping[str, Bound]
    closed: frozenset[str] = frozenset()
    extra: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    checks: tuple[Callable[[dict[str, Any]], None], ...] = ()


class _Parser:
    def __init__(self, objects: dict[str, Obj], rules: Rules) -> None:
        self.objects = objects
        self.rules = rules
        self.unions: list[Union] = []

    def parse(self, expr: str, where: str) -> Node:
        members = split_union(expr)
        bound = self.rules.bounds.get(where)
        closed = where in self.rules.closed
        nodes: list[Node] = []
        literals: list[Any] = []
        nullable = False
        for m in members:
            if m == "null":
                nullable = True
            elif m in ("true", "false"):
                literals.append(m == "true")
            elif m.startswith("="):
                literals.append(m[1:])
            else:
                nodes.append(self._member(m, where, bound))
        if literals:
            nodes.append(Lit(literals, closed) if closed or not all(isinstance(v, bool) for v in literals)
                         else Prim("bool"))
        if len(nodes) == 1 and not nullable:
            return nodes[0]
        if not nodes:
            return Prim("null")
        union = Union(nodes, nullable)
        self.unions.append(union)
        return union

    def _member(self, m: str, where: str, bound: Bound | None) -> Node:
        if m.startswith("["):
            return Arr(self.parse(m[1:-1], f"{where}[]"), bound)
        if m.startswith("{"):
            return Map(self.parse(m[1:-1], f"{where}.*"))
        if m == "any":
            return AnyValue()
        if m in _PRIMITIVES:
            return Prim(m, bound if m != "bool" else None)
        if m not in self.objects:
            raise KeyError(f"{where}: unknown type {m!r}")
        return self.objects[m]


@dataclass(frozen=True)
class Checker:
    """A compiled table: `check(body)` raises `Invalid` for the first problem, else returns."""

    root: Obj
    checks: tuple[Callable[[dict[str, Any]], None], ...]

    def check(self, body: dict[str, Any]) -> None:
        self.root.check(body, 1)
        for rule in self.checks:
            rule(body)


def compile_table(types: Mapping[str, Mapping[str, str]], root: str, rules: Rules) -> Checker:
    """Compile a type table (with `rules`) into a `Checker`. Raises KeyError on a dangling name."""
    objects = {name: Obj(name) for name in types}
    parser = _Parser(objects, rules)
    for name, fields in types.items():
        merged = {**fields, **rules.extra.get(name, {})}
        compiled = {}
        for name_, expr in merged.items():
            required = expr.startswith("!")
            node = parser.parse(expr.lstrip("!"), f"{name}.{name_}")
            nullable = isinstance(node, Union) and node.nullable or (isinstance(node, Prim) and node.name == "null")
            compiled[name_] = FieldSpec(node, required, nullable or isinstance(node, AnyValue))
        objects[name].set_fields(compiled)
    for union in parser.unions:
        union.resolve_tags()
    missing = set(rules.bounds) | set(rules.closed)
    known = {f"{name}.{f}" for name, fields in types.items() for f in fields} | {
        f"{name}.{f}" for name, fields in rules.extra.items() for f in fields}
    for where in missing:
        base = where.split("[", 1)[0].removesuffix(".*")
        if base not in known:
            raise KeyError(f"rule for {where!r}: no such field")
    return Checker(objects[root], rules.checks)
