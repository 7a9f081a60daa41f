"""The checked-in stubs are exactly what protos/ compiles to."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from securechat._gen import ca_pb2, chat_pb2

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "protogen.py"
_spec = importlib.util.spec_from_file_location("protogen", _TOOL)
assert _spec is not None and _spec.loader is not None
protogen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(protogen)


def test_checked_in_stubs_match_the_proto(tmp_path: Path):
    """Regenerate into a temp dir: every file must equal securechat/_gen's (run 'make proto' if not)."""
    for fresh in protogen.generate(tmp_path):
        checked_in = protogen.GEN_DIR / fresh.name
        assert checked_in.read_text() == fresh.read_text(), f"{checked_in} is stale: run 'make proto'"


def test_wire_names_follow_the_spec():
    """Package, service, methods and field numbers are the public contract."""
    file = chat_pb2.DESCRIPTOR
    assert file.name == "securechat/v1/chat.proto"
    assert file.package == "securechat.v1"
    service = file.services_by_name["ChatService"]
    assert {m.name: (m.input_type.name, m.output_type.name) for m in service.methods} == {
        "SayHello": ("HelloRequest", "HelloReply"),
        "Chat": ("ChatMessage", "ChatEvent"),
        "WhoAmI": ("WhoAmIRequest", "Identity"),
        "ChatBatched": ("ChatMessage", "ChatEventBatch"),
    }
    fields = {
        name: {f.name: f.number for f in file.message_types_by_name[name].fields}
        for name in ("HelloRequest", "HelloReply", "ChatMessage", "ChatEventBatch", "ChatEvent", "Identity")
    }
    assert fields == {
        "HelloRequest": {"name": 1},
        "HelloReply": {"message": 1},
        "ChatMessage": {"room": 1, "text": 2, "client_msg_id": 3},
        "ChatEventBatch": {"events": 1},
        "ChatEvent": {"id": 1, "room": 2, "sender": 3, "text": 4, "sent_at_unix_ms": 5, "kind": 6},
        "Identity": {"name": 1, "spiffe_id": 2, "serial": 3, "not_after": 4},
    }
    kind = file.message_types_by_name["ChatEvent"].enum_types_by_name["Kind"]
    assert {v.name: v.number for v in kind.values} == {"KIND_UNSPECIFIED": 0, "MESSAGE": 1, "JOIN": 2, "LEAVE": 3}


def test_ca_wire_names_follow_the_spec():
    """The CA service's package, service and methods are the public contract."""
    file = ca_pb2.DESCRIPTOR
    assert file.name == "securechat/ca/v1/ca.proto"
    assert file.package == "securechat.ca.v1"
    service = file.services_by_name["CertificateAuthority"]
    assert {m.name for m in service.methods} == {"Enroll", "Renew", "TrustBundle"}
