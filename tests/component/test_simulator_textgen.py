"""The simulator's deterministic text, token counting and tool arguments."""

from __future__ import annotations

from simulator import textgen


def test_reply_has_exactly_n_tokens_and_starts_with_simulated() -> None:
    for n in range(0, 40):
        pieces = textgen.reply_pieces("m", "question", n)
        assert len(pieces) == n
        assert textgen.count_tokens("".join(pieces)) == n
        if n:
            assert "".join(pieces).startswith("Simulated")
    assert textgen.reply_pieces("m", "q", 12) == textgen.reply_pieces("m", "q", 12)
    assert textgen.reply_pieces("m", "q", 12) != textgen.reply_pieces("other", "q", 12)


def test_limits_and_stop_sequences() -> None:
    cut = textgen.generate_text("m", "q", 12, 3, [])
    assert cut.stop == "length" and cut.output_tokens == 3
    whole = textgen.generate_text("m", "q", 12, 12, [])
    assert whole.stop == "end" and whole.output_tokens == 12
    stopped = textgen.generate_text("m", "q", 12, None, ["xx", "response"])
    assert (stopped.text, stopped.stop, stopped.stop_sequence) == ("Simulated ", "stop_sequence", "response")
    at_start = textgen.generate_text("m", "q", 12, None, ["Sim"])
    assert at_start.text == "" and at_start.output_tokens == 0


def test_token_rule() -> None:
    assert textgen.count_tokens("Hello, world!  it's 3.5") == 10
    assert textgen.count_tokens("   ") == 0


def test_tool_arguments_from_schema() -> None:
    schema = {"type": "object", "required": ["s", "i", "n", "b", "a", "o", "e", "c", "u", "x"], "properties": {
        "s": {"type": "string"}, "i": {"type": "integer"}, "n": {"type": "number"}, "b": {"type": "boolean"},
        "a": {"type": "array", "items": {"type": "string"}}, "e": {"enum": ["red", "blue"]}, "c": {"const": 7},
        "o": {"type": "object", "properties": {"deep": {"type": "string"}, "skip": {}}, "required": ["deep"]},
        "u": {"type": ["null", "integer"]}, "opt": {"type": "string"}}}
    assert textgen.example_object(schema) == {"s": "example", "i": 1, "n": 1, "b": True, "a": [],
                                              "o": {"deep": "example"}, "e": "red", "c": 7, "u": 1,
                                              "x": "example"}
