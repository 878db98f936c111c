"""Typed field access over a parsed YAML tree that records `path: message` problems instead of
raising, so a config reports every problem at once."""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """'150ms', '5s', '2m', '1h' → seconds; None when malformed."""
    m = _DURATION.match(text.strip()) if isinstance(text, str) else None
    return float(m.group(1)) * _UNITS[m.group(2)] if m else None


class _Reader:
    """Typed field access over a parsed YAML tree that records problems instead of raising."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, value: Any, path: str, known: tuple[str, ...]) -> dict[str, Any] | None:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, "must be a mapping")
            return None
        for key in value:
            if key not in known:
                self.fail(_join(path, str(key)), f"unknown key (expected one of: {', '.join(known)})")
        return value

    def seq(self, d: dict[str, Any], key: str, path: str, *, required: bool = False) -> list[Any]:
        value = d.get(key)
        if value is None:
            if required:
                self.fail(_join(path, key), "required")
            return []
        if not isinstance(value, list):
            self.fail(_join(path, key), "must be a list")
            return []
        return value

    def string(self, d: dict[str, Any], key: str, path: str, *, required: bool = False,
               default: str | None = None, choices: tuple[str, ...] = ()) -> str | None:
        value = d.get(key)
        if value is None:
            if required:
                self.fail(_join(path, key), "required")
            return default
        if not isinstance(value, str) or not value:
            self.fail(_join(path, key), "must be a non-empty string")
            return default
        if choices and value not in choices:
            self.fail(_join(path, key), f"must be one of: {', '.join(choices)}")
            return default
        return value

    def flag(self, d: dict[str, Any], key: str, path: str, default: bool = False) -> bool:
        value = d.get(key, default)
        if not isinstance(value, bool):
            self.fail(_join(path, key), "must be true or false")
            return default
        return value

    def number(self, d: dict[str, Any], key: str, path: str, default: float, *, integer: bool = False,
               minimum: float | None = None, maximum: float | None = None) -> Any:
        value = d.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
            self.fail(_join(path, key), "must be an integer" if integer else "must be a number")
            return default
        if minimum is not None and value < minimum:
            self.fail(_join(path, key), f"must be >= {_fmt(minimum)}")
            return default
        if maximum is not None and value > maximum:
            self.fail(_join(path, key), f"must be <= {_fmt(maximum)}")
            return default
        return value

    def duration(self, d: dict[str, Any], key: str, path: str, default: float, *, allow_zero: bool = True) -> float:
        value = d.get(key)
        if value is None:
            return default
        seconds = parse_duration(value) if isinstance(value, str) else None
        if seconds is None:
            self.fail(_join(path, key), "must be a duration such as 250ms, 5s, 2m or 1h")
            return default
        if seconds == 0 and not allow_zero:
            self.fail(_join(path, key), "must be > 0")
            return default
        return seconds


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fmt(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else str(n)
