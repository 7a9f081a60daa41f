"""The one taxonomy of TLS failures: every kind of evidence maps to the same reason, and each reason has its words."""

from __future__ import annotations

import pytest

from securechat.tls import failures
from securechat.tls.checks import Code, Problem
from securechat.tls.failures import Evidence, TlsFailure


def test_every_reason_has_a_code_both_views_and_a_fix():
    """No reason without words: the metric label, the operator's and the user's explanation, the fix."""
    for failure in TlsFailure:
        assert failure.code == failure.value and failure.code.isidentifier()
        assert failure.server_view and failure.client_view and failure.fix


@pytest.mark.parametrize(
    ("evidence", "reason"),
    [
        (Evidence(alert="TLSV1_ALERT_UNKNOWN_CA"), TlsFailure.UNKNOWN_CA),
        (Evidence(alert="SSLV3_ALERT_CERTIFICATE_EXPIRED"), TlsFailure.EXPIRED),
        (Evidence(alert="TLSV13_ALERT_CERTIFICATE_REQUIRED"), TlsFailure.NO_CERTIFICATE),
        (Evidence(alert="", sent_certificate=False), TlsFailure.NO_CERTIFICATE),
        (Evidence(alert="", local=Problem(Code.EXPIRED, "cert", "x")), TlsFailure.EXPIRED),
        (Evidence(alert="", local=Problem(Code.WRONG_EKU, "cert", "x")), TlsFailure.WRONG_EKU),
        (Evidence(alert="", local=Problem(Code.PATH_LENGTH, "ca", "x", depth=2)), TlsFailure.UNKNOWN_CA),
        (Evidence(alert=""), TlsFailure.UNKNOWN_CA),
        (Evidence(status_details="failed to connect: Connection refused"), TlsFailure.UNREACHABLE),
        (Evidence(status_details="Peer name localhost is not in peer certificate"), TlsFailure.SERVER_NAME_MISMATCH),
        (Evidence(status_details="... CERTIFICATE_VERIFY_FAILED ..."), TlsFailure.UNTRUSTED_SERVER),
        (Evidence(status_details="Socket closed", local=Problem(Code.REVOKED, "cert", "x")), TlsFailure.REVOKED),
        (Evidence(status_details="Socket closed"), TlsFailure.UNKNOWN_CA),
    ],
)
def test_diagnose_uses_the_best_evidence(evidence, reason):
    """An alert wins; a bare close is worked out from our own certificate as the server's verifier would."""
    assert failures.diagnose(evidence) is reason


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (
            "Handshake failed with error SSL_ERROR_SSL: ...:CERTIFICATE_VERIFY_FAILED: certificate has expired",
            "expired",
        ),
        (
            "Handshake failed with error SSL_ERROR_SSL: ...:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate",
            "unknown_ca",
        ),
        (
            "Handshake failed with error SSL_ERROR_SSL: ...:CERTIFICATE_VERIFY_FAILED: unsupported certificate purpose",
            "wrong_eku",
        ),
        ("Handshake failed with error SSL_ERROR_SSL: ...:BAD_PACKET_LENGTH", "client_rejected_server"),
        ("Handshake failed with error SSL_ERROR_SSL: ...:HTTP_REQUEST", "not_tls"),
    ],
)
def test_core_log_labels_are_the_taxonomy_codes(message, reason):
    """gRPC core's wording maps to the same labels the metric always had."""
    found = failures.from_core_log(message)
    assert found is not None and found.code == reason


def test_a_core_line_that_is_not_a_handshake_is_no_failure():
    """The twin: other core lines are not counted."""
    assert failures.from_core_log("Server shutdown in progress") is None
