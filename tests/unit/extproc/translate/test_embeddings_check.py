"""The hand-written embeddings request check (`openai_embeddings.check_request`) agrees with the SDK
type it replaced, `openai.types.EmbeddingCreateParams` run through `simulator.validate.check` as
the old check ran it: null counts as absent, unknown fields are extensions, `input` is judged by
`_check_input` (non-empty, which the type cannot say). Beyond the old check, the SDK's verdict on
`input` itself must agree too, and an empty `model` is the one refusal the type does not make."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openai.types import EmbeddingCreateParams

from extproc.errors import BadRequest
from extproc.translate.openai_embeddings import _check_input, check_request
from simulator.validate import check

UNKNOWN = ": unknown field"


def sdk_fields(body: dict[str, Any]) -> set[str]:
    """The top-level fields of `body` the SDK-based check refuses."""
    rest = {k: v for k, v in body.items() if v is not None}
    fields = {re.match(r"\w+", p)[0] for p in check(EmbeddingCreateParams, rest)  # type: ignore[index]
              if not p.endswith(UNKNOWN)}
    if body.get("model") == "":
        fields.add("model")
    try:
        _check_input(body.get("input"))
    except BadRequest:
        fields.add("input")
    return fields


BODIES: list[dict[str, Any]] = [
    # valid
    {"model": "m", "input": "x"},
    {"model": "m", "input": ["a", "b"]},
    {"model": "m", "input": [1, 2, 3]},
    {"model": "m", "input": [[1, 2], [3]]},
    {"model": "m", "input": "x", "dimensions": 256},
    {"model": "m", "input": "x", "encoding_format": "float"},
    {"model": "m", "input": "x", "encoding_format": "base64"},
    {"model": "m", "input": "x", "user": "u"},
    {"model": "m", "input": "x", "truncate_prompt_tokens": 10, "extra": {"a": [1]}},
    {"model": "m", "input": "x", "dimensions": None, "encoding_format": None, "user": None, "extra": None},
    {"model": "text-embedding-3-small", "input": ["a"], "dimensions": 0, "encoding_format": "float", "user": ""},
    # model
    {"input": "x"},
    {"model": None, "input": "x"},
    {"model": "", "input": "x"},
    {"model": 7, "input": "x"},
    {"model": True, "input": "x"},
    {"model": ["m"], "input": "x"},
    # input
    {"model": "m"},
    {"model": "m", "input": None},
    {"model": "m", "input": ""},
    {"model": "m", "input": []},
    {"model": "m", "input": ["a", 1]},
    {"model": "m", "input": ["a", ["b"]]},
    {"model": "m", "input": [[1], []]},
    {"model": "m", "input": [True]},
    {"model": "m", "input": [[1, False]]},
    {"model": "m", "input": [1, 2.5]},
    {"model": "m", "input": 3.5},
    {"model": "m", "input": {"text": "x"}},
    # dimensions
    {"model": "m", "input": "x", "dimensions": "256"},
    {"model": "m", "input": "x", "dimensions": True},
    {"model": "m", "input": "x", "dimensions": 1.5},
    # encoding_format
    {"model": "m", "input": "x", "encoding_format": "int8"},
    {"model": "m", "input": "x", "encoding_format": 1},
    # user
    {"model": "m", "input": "x", "user": 7},
    {"model": "m", "input": "x", "user": ["u"]},
    # several at once: the hand check names one of them
    {},
    {"model": "m", "input": "x", "dimensions": "x", "user": False},
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: repr(b)[:80])
def test_hand_check_agrees_with_the_sdk_type(body: dict[str, Any]) -> None:
    expected = sdk_fields(body)
    if not expected:
        check_request(body)
        return
    with pytest.raises(BadRequest) as info:
        check_request(body)
    assert info.value.param in expected, (info.value.param, expected)


def test_the_table_covers_every_field() -> None:
    refused = set().union(*(sdk_fields(b) for b in BODIES))
    assert refused == {"model", "input", "dimensions", "encoding_format", "user"}
    assert sum(not sdk_fields(b) for b in BODIES) >= 10
