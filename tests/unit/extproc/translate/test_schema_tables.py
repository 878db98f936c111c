"""The client APIs' type tables are what the SDKs say (regenerated and compared), and the engine
that runs them judges values as its docstring says, one rule per row."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.errors import BadRequest
from extproc.translate.schema import CHECKERS, grammar, rules
from extproc.translate.schema.engine import MAX_DEPTH, Bound, Invalid
from extproc.translate.schema.grammar import Rules, compile_table
from tests.unit.extproc.translate import sdk_schema


def test_the_tables_are_the_installed_sdks_types() -> None:
    """A newer SDK changes a table: rewrite with `python -m tests.unit.extproc.translate.sdk_schema`
    and read the diff (a new field, a new block type, a field that became required)."""
    for path, text in sdk_schema.rendered().items():
        assert path.read_text() == text, f"{path.name} is stale: regenerate it"


def test_every_rule_names_a_field_of_its_table() -> None:
    with pytest.raises(KeyError, match="no such field"):
        compile_table({"Root": {"a": "int"}}, "Root", Rules({"Root.b": Bound(0, 1)}))
    with pytest.raises(KeyError, match="unknown type"):
        compile_table({"Root": {"a": "Missing"}}, "Root", Rules({}))
    assert set(CHECKERS) == {"openai", "openai-embeddings", "anthropic", "openai-completions", "anthropic-count-tokens",
                            "openai-responses"}


TABLE = {
    "Root": {
        "n": "int", "x": "num", "flag": "bool", "name": "!str", "effort": "=low|=high|null", "format": "=a|=b",
        "tags": "[str]", "bias": "{int}", "stream": "bool|null", "blob": "any",
        "parts": "[TextPart|ImagePart]", "tool": "Custom|Server", "one": "TextPart", "title": "!str|null",
    },
    "TextPart": {"type": "!=text", "text": "!str"},
    "ImagePart": {"type": "!=image", "url": "!str"},
    "Custom": {"type": "=custom|null", "schema": "!{any}"},
    "Server": {"type": "!=web_search_1", "name": "!str"},
}
CHECK = compile_table(TABLE, "Root", Rules({"Root.n": Bound(1, 10), "Root.bias.*": Bound(-5, 5),
                                            "Root.tags": Bound(None, 2), "Root.name": Bound(1, 8)},
                                           closed=frozenset({"Root.format"})))
BASE = {"name": "x", "title": None}


def problem(**fields: Any) -> tuple[str, str] | None:
    try:
        CHECK.check({**BASE, **fields})
    except Invalid as e:
        return e.path, e.problem
    return None


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, None),
    ({"n": 3, "x": 1, "flag": False, "stream": None, "tags": ["a"], "bias": {"1": -5}}, None),
    # kinds are exact: a boolean is no integer, 1.0 is no integer, an integer is a number
    ({"n": True}, ("n", "expected an integer, got a boolean")),
    ({"n": 2.0}, ("n", "expected an integer, got a number")),
    ({"x": 7}, None),
    ({"flag": 0}, ("flag", "expected a boolean, got an integer")),
    # documented bounds; integers within 64 bits; strings by length; arrays by count; map values
    ({"n": 0}, ("n", "must be between 1 and 10")),
    ({"x": 2**63}, None),
    ({"blob": {"k": 2**63}}, None),
    ({"name": ""}, ("name", "must have between 1 and 8 characters")),
    ({"tags": ["a", "b", "c"]}, ("tags", "must have at most 2 items")),
    ({"bias": {"7": 6}}, ("bias.7", "must be between -5 and 5")),
    # null: absent when optional; a required field must be there (or take null)
    ({"n": None, "parts": None}, None),
    ({"name": None}, ("name", "is required")),
    ({"title": "t"}, None),
    # literals: open (a newer value passes) unless the rules close the field; their kind counts
    ({"effort": "ultra"}, None),
    ({"effort": []}, ("effort", "expected a string, got an array")),
    ({"format": "c"}, ("format", "must be one of 'a', 'b'")),
    # tagged unions: a known tag selects, an unknown string tag is an extension, a bad tag is named
    ({"parts": [{"type": "text", "text": "t"}, {"type": "image", "url": "u"}]}, None),
    ({"parts": [{"type": "text", "text": "t"}, {"type": "image"}]}, ("parts[1].url", "is required")),
    ({"parts": [{"type": "video", "anything": [1]}]}, None),
    ({"parts": [{"type": []}]}, ("parts[0].type", "expected a string, got an array")),
    ({"parts": [{"text": "t"}]}, ("parts[0].type", "is required")),
    ({"parts": ["t"]}, ("parts[0]", "expected an object, got a string")),
    ({"tool": {"schema": {}}}, None),  # no tag: the member whose tag is optional
    ({"tool": {"type": "web_search_1"}}, ("tool.name", "is required")),
    ({"tool": {"type": "web_search_2", "name": 5}}, None),  # a newer tool version
    ({"one": {"type": "other", "x": 1}}, None),  # a lone tagged type: the same rule
    ({"one": {"type": "text"}}, ("one.text", "is required")),
    # unknown fields are extensions: not judged, but their depth is
    ({"vendor": {"a": [1, "x", None]}}, None),
])
def test_engine(fields: dict[str, Any], expected: tuple[str, str] | None) -> None:
    assert problem(**fields) == expected


def _nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("field", ["vendor", "blob"])
def test_depth_is_counted_from_the_body_wherever_the_value_is(field: str) -> None:
    # The body is level 1: a field's value may hold MAX_DEPTH - 1 levels of containers.
    assert problem(**{field: _nest(MAX_DEPTH - 1)}) is None
    assert problem(**{field: _nest(MAX_DEPTH)}) == (field, f"is nested more than {MAX_DEPTH} levels deep")
    assert problem(parts=[{"type": "video", "x": _nest(MAX_DEPTH - 3)}]) is None
    assert problem(parts=[{"type": "video", "x": _nest(MAX_DEPTH - 2)}]) is not None


def test_a_union_names_the_member_that_got_furthest() -> None:
    check = compile_table({"R": {"input": "!str|[str]|[int]|[[int]]"}}, "R", Rules({}))
    for value, path in [([1, "a"], "input[1]"), (["a", 1], "input[1]"), ([[1], [True]], "input[1][0]")]:
        with pytest.raises(Invalid) as info:
            check.check({"input": value})
        assert info.value.path == path


def test_a_long_key_is_shortened_in_the_path() -> None:
    key = "k" * 10_000
    found = problem(bias={key: "x"})
    assert found is not None and len(found[0]) < 60 and found[0].startswith("bias.kkk")


def test_literal_expressions() -> None:
    assert [grammar.literal(v) for v in ("text", True, False)] == ["=text", "true", "false"]
    with pytest.raises(ValueError):
        grammar.literal("a|b")
    assert grammar.split_union("str|[A|B]|{int}|null") == ["str", "[A|B]", "{int}", "null"]


def test_messages_name_the_field_in_each_clients_format() -> None:
    e = Invalid("temperature", "must be between 0 and 2")
    assert rules.bad_request(e, anthropic=False).message == "Invalid value for 'temperature': must be between 0 and 2."
    assert rules.bad_request(e, anthropic=True).message == "temperature: must be between 0 and 2"
    missing = Invalid("messages", "is required", missing=True)
    assert rules.bad_request(missing, anthropic=False).message == "Missing required parameter: 'messages'."
    assert rules.bad_request(missing, anthropic=True).message == "messages: Field required"
    assert rules.bad_request(e, anthropic=True).param == "temperature"


def test_a_fault_inside_the_check_is_not_a_400(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a verdict (`Invalid`) becomes a 400; anything else the check raises is an internal
    fault and reaches the server's boundary as itself (a 500 with the request id)."""
    import extproc.translate.schema as schema

    def broken(body: dict[str, Any]) -> None:
        raise ZeroDivisionError("a bug")

    faulty = compile_table({"R": {"a": "int"}}, "R", Rules({}, checks=(broken,)))
    monkeypatch.setitem(schema.CHECKERS, "openai", faulty)
    with pytest.raises(ZeroDivisionError):
        schema.check_request("openai", {"a": 1})
    with pytest.raises(BadRequest):
        schema.check_request("openai", {"a": "x"})
