"""`streaming.news`: a streamed message carries only the dynamic metadata Envoy does not hold yet.

Envoy merges each message's metadata into what it holds, key by key; what it holds after every
message must be what a message carrying all of it would have left (the true-up of a stream cut at
any point, the access log's fields).
"""

from __future__ import annotations

from extproc.stages import streaming
from extproc.stages.flow import Flow
from extproc.translate.base import Usage


class Spent:
    """A stand-in for the router stage's `_spent`: counts its calls, reads the flow like it does."""

    def __init__(self, f: Flow) -> None:
        self.f = f
        self.calls = 0

    def __call__(self) -> dict[str, dict[str, str]]:
        self.calls += 1
        u = self.f.usage
        tokens = u.prompt_tokens + u.completion_tokens if u else 10 + self.f.events
        return {"interlock": {"usage_tokens": str(tokens), "usage_usd": str(tokens * 3), "access_tenant": "t"}}


def test_only_what_changed_goes_and_envoy_holds_the_whole() -> None:
    f = Flow()
    spent = Spent(f)
    held: dict[str, dict[str, str]] = {}
    steps: list[dict[str, dict[str, str]] | None] = []

    def message(events: int | None = None) -> None:
        if events is not None:
            f.events = events
        out = streaming.news(f, spent)
        steps.append(out)
        for ns, fields in (out or {}).items():  # Envoy's merge
            held.setdefault(ns, {}).update(fields)
        assert held == spent()  # as if the message carried all of it
        spent.calls -= 1

    message(events=1)
    assert steps[-1] == {"interlock": {"usage_tokens": "11", "usage_usd": "33", "access_tenant": "t"}}
    message(events=1)  # nothing new: nothing sent, and nothing computed
    assert steps[-1] is None and spent.calls == 1
    message(events=2)  # no usage yet: each event counts
    assert steps[-1] == {"interlock": {"usage_tokens": "12", "usage_usd": "36"}}
    f.usage = Usage(prompt_tokens=20, completion_tokens=1)
    message(events=3)
    assert steps[-1] == {"interlock": {"usage_tokens": "21", "usage_usd": "63"}}
    calls = spent.calls
    message(events=4)  # the provider's usage stands: events no longer change it
    assert steps[-1] is None and spent.calls == calls
    f.usage.completion_tokens = 9  # a translator updating its usage in place
    message(events=5)
    assert steps[-1] == {"interlock": {"usage_tokens": "29", "usage_usd": "87"}}


def test_nothing_to_send() -> None:
    f = Flow()
    assert streaming.news(f, lambda: None) is None
    f.events = 1
    assert streaming.news(f, lambda: {}) is None
