"""The embeddings request check (`openai_embeddings.check_request`, the client request check of
`extproc.translate.schema`) agrees with the SDK type, `openai.types.EmbeddingCreateParams` run
through `simulator.validate.check` (`bodies.sdk_problems`: null counts as absent, unknown fields
are extensions). Beyond the type: `input` is non-empty with at most 2048 entries, `dimensions` at
least 1 and within 64 bits, and an empty `model` is refused (`bodies.gateway_only`)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from extproc.errors import BadRequest
from extproc.translate.openai_embeddings import check_request
from tests.unit.extproc.translate.bodies import EMBEDDINGS, gateway_only, sdk_problems


def sdk_fields(body: dict[str, Any]) -> set[str]:
    """The top-level fields of `body` the SDK-based check refuses."""
    return {re.match(r"\w+", path)[0] for path, _ in sdk_problems(EMBEDDINGS, body)}  # type: ignore[index]


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
    {"model": "text-embedding-3-small", "input": ["a"], "dimensions": 1, "encoding_format": "float", "user": ""},
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
    {"model": "m", "input": "x", "dimensions": 0},  # the API's minimum is 1
    {"model": "m", "input": "x", "dimensions": 2**63},  # past 64 bits (the example)
    {"model": "m", "input": ["x"] * 2049},  # at most 2048 entries
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
def test_check_agrees_with_the_sdk_type(body: dict[str, Any]) -> None:
    expected = sdk_fields(body)
    try:
        check_request(body)
    except BadRequest as e:
        top = re.match(r"\w+", e.param or "")
        assert top is not None
        assert top[0] in expected or gateway_only(EMBEDDINGS, body, e.param or "", e.message), (e.param, expected)
        return
    assert not expected


def test_the_table_covers_every_field() -> None:
    refused = set().union(*(sdk_fields(b) for b in BODIES))
    assert refused == {"model", "input", "dimensions", "encoding_format", "user"}
    assert sum(not sdk_fields(b) for b in BODIES) >= 10
