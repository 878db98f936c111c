"""The DecisionRecord protobuf: generated code up to date, and its trip through Envoy dynamic metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import json_format, struct_pb2

from extproc.pb import decision
from extproc.pb.decision import KEY, from_metadata, to_struct_value
from extproc.pb.interlock.v1.decision_pb2 import DecisionRecord

ROOT = Path(__file__).resolve().parents[3]
PROTOS = ROOT / "protos"
GENERATED = ROOT / "extproc" / "pb"
NAMESPACE = "interlock"


def _protos() -> list[str]:
    return sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    protos = _protos()
    assert "interlock/v1/decision.proto" in protos
    # The same command as `make protos`, into a scratch directory.
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"--python_out={tmp_path}",
                    f"--pyi_out={tmp_path}", *(str(PROTOS / p) for p in protos)], check=True, cwd=ROOT)
    fresh = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert fresh == sorted(p[:-len(".proto")] + ext for p in protos for ext in ("_pb2.py", "_pb2.pyi"))
    checked_in = sorted(p.relative_to(GENERATED).as_posix() for p in GENERATED.rglob("*_pb2.py*"))
    assert checked_in == fresh, "generated files added or removed: run `make protos`"
    for name in fresh:
        assert (GENERATED / name).read_bytes() == (tmp_path / name).read_bytes(), (
            f"extproc/pb/{name} is not what protos/ generates: run `make protos`")


def _body(size: int) -> str:
    """A request body of about `size` bytes, with characters from every UTF-8 length."""
    text = "héllo wörld — 日本語 😀 \"quoted\" \\ \n "
    content = text * (size // len(text.encode()) + 1)
    return json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}, ensure_ascii=False)


def _through_envoy(namespace_value: dict) -> struct_pb2.Struct:
    """The router stage's ProcessingResponse → Envoy → the upstream stage's ProcessingRequest, on the wire."""
    resp = pb.ProcessingResponse()
    resp.dynamic_metadata.update({NAMESPACE: namespace_value})
    sent = pb.ProcessingResponse.FromString(resp.SerializeToString())
    # Envoy stores the namespace as a Struct and forwards it (forwarding_namespaces) as filter metadata.
    req = pb.ProcessingRequest()
    req.metadata_context.filter_metadata[NAMESPACE].CopyFrom(sent.dynamic_metadata.fields[NAMESPACE].struct_value)
    received = pb.ProcessingRequest.FromString(req.SerializeToString())
    return received.metadata_context.filter_metadata[NAMESPACE]


@pytest.mark.parametrize("size", [2_000, 200_000, 2_000_000])
def test_round_trip_through_dynamic_metadata(size: int) -> None:
    record = DecisionRecord(client_api="anthropic", route="chat-ü",
                            deployments=["claude@anthropic:claude-sonnet-4", "gpt-4o@openai:gpt-4o-2024-08-06"],
                            request=_body(size))
    assert len(record.request.encode()) >= size
    struct = _through_envoy({KEY: to_struct_value(record), "reserve_tokens": "1200", "reserve_usd": "0.01"})
    assert struct.fields["reserve_tokens"].string_value == "1200"  # the rate-limit keys beside it
    back = from_metadata(struct)
    assert back == record
    assert back is not None and back.request == record.request
    assert json.loads(back.request) == json.loads(record.request)


def test_defaults_round_trip() -> None:
    record = DecisionRecord(client_api="openai-embeddings", deployments=["e@p:m"], request="{}")
    value = to_struct_value(record)
    assert "route" not in value  # the JSON mapping omits fields at their default
    assert from_metadata(_through_envoy({KEY: value})) == record
    assert from_metadata(_through_envoy({KEY: {}})) == DecisionRecord()


@pytest.mark.parametrize("record", [
    DecisionRecord(),
    DecisionRecord(client_api="openai", route="r", deployments=["a@b:c"], request='{"a": "é"}'),
    DecisionRecord(deployments=["", "x"], request=" "),
])
def test_same_as_json_format(record: DecisionRecord) -> None:
    value = to_struct_value(record)
    assert value == json_format.MessageToDict(record, preserving_proto_field_name=True)
    struct = struct_pb2.Struct()
    struct.update({KEY: value})
    expected = json_format.ParseDict(value, DecisionRecord())
    assert from_metadata(struct) == expected


def test_absent_is_none() -> None:
    assert from_metadata(struct_pb2.Struct()) is None
    assert from_metadata(_through_envoy({"reserve_tokens": "5"})) is None


def test_json_names_nulls_and_unknown_keys_are_accepted() -> None:
    struct = struct_pb2.Struct()
    struct.update({KEY: {"clientApi": "openai", "route": None, "deployments": ["a@b:c"], "request": "{}",
                         "added_later": {"x": 1}}})
    assert from_metadata(struct) == DecisionRecord(client_api="openai", deployments=["a@b:c"], request="{}")
    assert json_format.ParseDict(json_format.MessageToDict(struct.fields[KEY].struct_value), DecisionRecord(),
                                 ignore_unknown_fields=True) == from_metadata(struct)


@pytest.mark.parametrize(("value", "message"), [
    ("a string", "expected a struct"),
    (["a", "list"], "expected a struct"),
    (3, "expected a struct"),
    (None, "expected a struct"),
    ({"client_api": 1}, "'client_api' must be a string"),
    ({"route": ["r"]}, "'route' must be a string"),
    ({"request": {"model": "x"}}, "'request' must be a string"),
    ({"request": True}, "'request' must be a string"),
    ({"deployments": "a@b:c,d@e:f"}, "'deployments' must be a list of strings"),
    ({"deployments": ["a@b:c", 2]}, r"deployments\[1\] must be a string"),
    ({"deployments": [None]}, r"deployments\[0\] must be a string"),
    ({"client_api": "openai", "clientApi": "anthropic"}, "'client_api' given twice"),
])
def test_malformed_is_value_error(value: object, message: str) -> None:
    struct = struct_pb2.Struct()
    struct.update({KEY: value})
    with pytest.raises(ValueError, match=message):
        from_metadata(_through_envoy({KEY: value}))
    with pytest.raises(ValueError, match=message):
        from_metadata(struct)


def test_value_without_kind_is_value_error() -> None:
    struct = struct_pb2.Struct()
    struct.fields[KEY].Clear()  # present, but no kind set (Envoy would not send this; a bug might)
    with pytest.raises(ValueError, match="expected a struct"):
        from_metadata(struct)


def test_public_api() -> None:
    assert KEY == "decision"
    assert set(decision.__all__) == {"KEY", "DecisionRecord", "from_metadata", "to_struct_value"}
