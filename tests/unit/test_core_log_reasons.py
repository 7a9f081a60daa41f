"""Which reason a line of gRPC core's log gives for a refused TLS handshake."""

from __future__ import annotations

import pytest

from securechat.server.core_log import handshake_reason


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Handshake failed with error SSL_ERROR_SSL: error:100000c0:SSL routines:OPENSSL_internal:PEER_DID_NOT_RETURN_A_CERTIFICATE: x", "no_certificate"),
        ("Handshake failed with error SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: certificate is not yet valid", "not_yet_valid"),
        ("Handshake failed with error SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER: x", "not_tls"),
        ("Handshake failed with error SSL_ERROR_SSL: something new", "other"),
    ],
)
def test_handshake_reasons_from_core_messages(message: str, reason: str) -> None:
    """Core's wording (BoringSSL's reason codes) maps to a reason label; an unknown one is 'other', never dropped."""
    found = handshake_reason(message)
    assert found is not None and found[0] == reason


def test_other_core_lines_are_not_handshake_failures() -> None:
    """A core line about something else is logged, not counted."""
    assert handshake_reason("Server shutdown in progress") is None
