"""What `frames.Connection` tells its owner: the connection's state and the events of its calls."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from extproc.h2grpc.wire import ErrorCode, Status


class ConnectionState(Enum):
    OPEN = "open"
    GOING_AWAY = "going away"  # no new streams; open ones finish
    CLOSED = "closed"  # a protocol error, or the owner's close(): nothing more in or out


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A call's request headers (names and values decoded as latin-1; pseudo-headers included)."""

    stream_id: int
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """One complete gRPC request message, without its 5-byte prefix."""

    stream_id: int
    message: bytes


@dataclass(frozen=True, slots=True)
class InputEnded:
    """The client half-closed the call, leaving `incomplete` bytes of an unfinished message."""

    stream_id: int
    incomplete: int


@dataclass(frozen=True, slots=True)
class CallReset:
    """The client reset a call the owner had not ended: the call is gone, its sends are dropped."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class CallFailed:
    """The framing layer ended a call itself (its trailers carry `status`): the call is gone."""

    stream_id: int
    status: Status
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """A protocol error: GOAWAY with `error` is queued and the connection is CLOSED."""

    error: ErrorCode
    reason: str


Event = CallStarted | MessageReceived | InputEnded | CallReset | CallFailed | ConnectionTerminated
