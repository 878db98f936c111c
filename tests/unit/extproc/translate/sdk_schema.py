"""Generates the client APIs' type tables (`extproc/translate/schema/sdk_*.py`) from the official
SDKs' request param types, which the product may not import. `test_schema_tables.py` regenerates
them and compares, so a newer SDK shows up as a failing test naming the change; rewrite with

    .venv/bin/python -m tests.unit.extproc.translate.sdk_schema

The table is data: type name → field → type expression (the grammar is in
`extproc.translate.schema.grammar`). Simplifications, each one loses nothing the engine checks:
a union of `str` and string literals (model names) is `str`; `Iterable`, `Sequence`, `List` are
arrays; `Dict[str, X]` is `{X}`; `object`/`Any` is `any`; a `stream` of `Literal[True]` (streaming
params) or `Literal[False]` (non-streaming) is `bool`; the SDK's file inputs (`IO[bytes]`,
`PathLike`) are not JSON and are left out of their unions.
"""

from __future__ import annotations

import collections.abc
import importlib.metadata
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, ForwardRef, Literal, Union

import typing_extensions

from extproc.translate.schema import grammar

ROOT = Path(__file__).resolve().parents[4]
OUT = ROOT / "extproc" / "translate" / "schema"

_LITERAL = {Literal, typing_extensions.Literal}
_REQUIRED = {typing.Required, typing_extensions.Required}
_NOT_REQUIRED = {typing.NotRequired, typing_extensions.NotRequired}
_ARRAYS = {list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.MutableSequence,
           collections.abc.Iterable, collections.abc.Collection}
_MAPS = {dict, collections.abc.Mapping, collections.abc.MutableMapping}


def _resolve(ref: ForwardRef) -> Any:
    module = getattr(ref, "__forward_module__", None)
    namespace = vars(sys.modules[module]) if isinstance(module, str) and module in sys.modules else {}
    return eval(ref.__forward_arg__, namespace)  # noqa: S307 - SDK annotation text


def _unwrap(typ: Any) -> tuple[Any, bool | None]:
    """(the type without Annotated/Required/NotRequired/aliases, required-ness if stated)."""
    required: bool | None = None
    while True:
        if isinstance(typ, str):
            typ = ForwardRef(typ)
        if isinstance(typ, ForwardRef):
            typ = _resolve(typ)
            continue
        origin = typing.get_origin(typ)
        if origin in _REQUIRED or origin in _NOT_REQUIRED:
            required = origin in _REQUIRED
            typ = typing.get_args(typ)[0]
            continue
        if origin is typing.Annotated:
            typ = typing.get_args(typ)[0]
            continue
        if type(typ).__name__ == "TypeAliasType":
            typ = typ.__value__
            continue
        return typ, required


def _is_object(typ: Any) -> bool:
    return isinstance(typ, type) and (typing_extensions.is_typeddict(typ) or hasattr(typ, "model_fields"))


def _python_only(typ: Any) -> bool:
    typ, _ = _unwrap(typ)
    return typing.get_origin(typ) in (typing.IO, os.PathLike) or typ in (typing.IO, os.PathLike)


class Generator:
    """Walks one root param type; `types` collects every object type reached, by name."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, str]] = {}
        self._names: dict[Any, str] = {}

    def name(self, typ: Any) -> str:
        if typ not in self._names:
            name = typ.__name__
            taken = set(self._names.values())
            if name in taken:  # two SDK classes of one name in different modules
                name = f"{name}_{typ.__module__.rsplit('.', 1)[-1]}"
            self._names[typ] = name
            self.types[name] = {}
            self.types[name] = self.fields(typ)
        return self._names[typ]

    def fields(self, typ: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        if typing_extensions.is_typeddict(typ):
            hints = typing.get_type_hints(typ, include_extras=True)
            required_keys = getattr(typ, "__required_keys__", frozenset())
            for name, hint in hints.items():
                inner, required = _unwrap(hint)
                out[name] = ("!" if (required if required is not None else name in required_keys) else "") + \
                    self.expr(inner)
        else:
            for name, field in typ.model_fields.items():
                out[field.alias or name] = ("!" if field.is_required() else "") + self.expr(field.annotation)
        return out

    def expr(self, typ: Any) -> str:
        typ, _ = _unwrap(typ)
        origin = typing.get_origin(typ)
        if typ is Any or typ is object:
            return "any"
        if typ is None or typ is type(None):
            return "null"
        if origin in _LITERAL:
            return "|".join(grammar.literal(v) for v in typing.get_args(typ))
        if origin is Union or origin is types.UnionType:
            members: list[str] = []
            for m in typing.get_args(typ):
                if _python_only(m):  # the SDK's file inputs (IO, PathLike): not JSON
                    continue
                for part in grammar.split_union(self.expr(m)):
                    if part not in members:
                        members.append(part)
            if "str" in members:  # a model name: str or known literals
                members = [m for m in members if not m.startswith("=")]
            # Sorted: Python caches typing unions by their members as a set, so the order a union
            # comes back in depends on which equal union some module built first.
            return "|".join(sorted(members))
        if origin in _ARRAYS or getattr(origin, "__name__", "") == "SequenceNotStr" or typ in (list, tuple):
            args = typing.get_args(typ)
            return f"[{self.expr(args[0]) if args else 'any'}]"
        if origin in _MAPS or typ is dict:
            args = typing.get_args(typ)
            return f"{{{self.expr(args[1]) if len(args) == 2 else 'any'}}}"
        if _is_object(typ):
            return self.name(typ)
        simple = {bool: "bool", int: "int", float: "num", str: "str"}
        if typ in simple:
            return simple[typ]
        raise TypeError(f"no expression for {typ!r}")


def generate(root: Any, root_name: str, stream: str | None) -> tuple[dict[str, dict[str, str]], str]:
    g = Generator()
    fields = g.fields(root)
    if stream is not None:
        fields["stream"] = stream
    g.types = {root_name: fields, **g.types}
    return g.types, root_name


def _sources() -> dict[str, tuple[str, str, dict[str, dict[str, str]], str]]:
    """file stem → (package, root type text, table, root name)."""
    from anthropic.types import message_count_tokens_params as count_params
    from anthropic.types import message_create_params as anthropic_params
    from openai.types import completion_create_params as completions_params
    from openai.types import embedding_create_params
    from openai.types.chat import completion_create_params as chat_params
    from openai.types.responses import response_create_params as responses_params

    return {
        "sdk_openai_chat": ("openai", "openai.types.chat.CompletionCreateParams",
                            *generate(chat_params.CompletionCreateParamsBase, "CompletionCreateParams", "bool|null")),
        "sdk_openai_embeddings": ("openai", "openai.types.EmbeddingCreateParams",
                                  *generate(embedding_create_params.EmbeddingCreateParams, "EmbeddingCreateParams",
                                            None)),
        "sdk_openai_responses": ("openai", "openai.types.responses.ResponseCreateParams",
                                 *generate(responses_params.ResponseCreateParamsBase, "ResponseCreateParams",
                                           "bool|null")),
        "sdk_anthropic_messages": ("anthropic", "anthropic.types.MessageCreateParams",
                                   *generate(anthropic_params.MessageCreateParamsBase, "MessageCreateParams", "bool")),
        "sdk_openai_completions": ("openai", "openai.types.CompletionCreateParams",
                                   *generate(completions_params.CompletionCreateParamsBase, "CompletionCreateParams",
                                             "bool|null")),
        "sdk_anthropic_count_tokens": ("anthropic", "anthropic.types.MessageCountTokensParams",
                                       *generate(count_params.MessageCountTokensParams, "MessageCountTokensParams",
                                                 None)),
    }


def render(package: str, source: str, table: dict[str, dict[str, str]], root: str) -> str:
    version = importlib.metadata.version(package)
    lines = [
        f'"""The `{source}` request type of `{package}` {version}, as data for',
        "`extproc.translate.schema.grammar` (the grammar is there).",
        "",
        "Generated by tests/unit/extproc/translate/sdk_schema.py: do not edit; regenerate with",
        "`.venv/bin/python -m tests.unit.extproc.translate.sdk_schema` (a test compares).",
        '"""',
        "",
        f'SDK = "{package} {version}"',
        f'ROOT = "{root}"',
        "TYPES: dict[str, dict[str, str]] = {",
    ]
    for name, fields in table.items():
        lines.append(f'    "{name}": {{')
        for field, expr in fields.items():
            item = f'        "{field}": "{expr}",'
            if len(item) <= 110:
                lines.append(item)
            else:  # split a long expression at its bars, as implicitly joined strings
                lines.append(f'        "{field}": (')
                parts = expr.split("|")
                chunk = ""
                for i, part in enumerate(parts):
                    piece = part + ("|" if i < len(parts) - 1 else "")
                    if chunk and len(chunk) + len(piece) > 96:
                        lines.append(f'            "{chunk}"')
                        chunk = ""
                    chunk += piece
                lines.append(f'            "{chunk}"')
                lines.append("        ),")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def rendered() -> dict[Path, str]:
    return {OUT / f"{stem}.py": render(package, source, table, root)
            for stem, (package, source, table, root) in _sources().items()}


if __name__ == "__main__":
    for path, text in rendered().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
