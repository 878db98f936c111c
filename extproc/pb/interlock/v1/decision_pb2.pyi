from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class DecisionRecord(_message.Message):
    __slots__ = ("client_api", "route", "deployments", "request")
    CLIENT_API_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    client_api: str
    route: str
    deployments: _containers.RepeatedScalarFieldContainer[str]
    request: str
    def __init__(self, client_api: _Optional[str] = ..., route: _Optional[str] = ..., deployments: _Optional[_Iterable[str]] = ..., request: _Optional[str] = ...) -> None: ...
