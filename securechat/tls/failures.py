"""The ONE taxonomy of TLS failure reasons: what went wrong in a handshake, from either side, and the fix.

Three places explain a failed TLS connection and must say the same thing:
the server's core log (`server.core_log`: gRPC core's handshake lines become
a log line and the metric label `securechat_tls_handshake_failures{reason}`),
`doctor`'s network checks (a TLS alert the server sent, or a bare close), and
the client's one-line errors (a gRPC UNAVAILABLE status's text). Each
observes different *evidence*; each maps it here, to one `TlsFailure`, and
renders that member's words:

    TlsFailure.EXPIRED.code         'expired'  (the metric label, stable)
    TlsFailure.EXPIRED.server_view  what an operator reads in the server log
    TlsFailure.EXPIRED.client_view  what the client (or doctor) tells its user
    TlsFailure.EXPIRED.fix          the command or setting that fixes it

    from_core_log(message)    -> TlsFailure | None   gRPC core's "Handshake failed ..." line
    from_alert(reason)        -> TlsFailure          a TLS alert's reason (OpenSSL's name)
    from_status(details)      -> TlsFailure | None   a client's UNAVAILABLE status details
    from_problem(problem)     -> TlsFailure          a local `tls.checks` Problem
    diagnose(evidence)        -> TlsFailure          all of the above, best evidence first

What is *not* here: the wording of refusals after a handshake (revoked,
not allowed: those are gRPC statuses with their own reasons), and the
rendering itself (the CLI, doctor and the client do that).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from securechat.tls.checks import CHAIN_CODES, Code, Problem


class TlsFailure(Enum):
    """Why a TLS handshake failed. The value is the stable code (a Prometheus label)."""

    NO_CERTIFICATE = "no_certificate"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    UNKNOWN_CA = "unknown_ca"
    WRONG_EKU = "wrong_eku"
    REVOKED = "revoked"
    BAD_CERTIFICATE = "bad_certificate"
    CLIENT_REJECTED_SERVER = "client_rejected_server"
    SERVER_NAME_MISMATCH = "server_name_mismatch"
    UNTRUSTED_SERVER = "untrusted_server"
    NOT_TLS = "not_tls"
    UNREACHABLE = "unreachable"
    OTHER = "other"

    @property
    def code(self) -> str:
        return str(self.value)

    @property
    def server_view(self) -> str:
        return _WORDS[self][0]

    @property
    def client_view(self) -> str:
        return _WORDS[self][1]

    @property
    def fix(self) -> str:
        return _WORDS[self][2]


# (server's view, client's view, fix)
_WORDS: dict[TlsFailure, tuple[str, str, str]] = {
    TlsFailure.NO_CERTIFICATE: (
        "the client sent no certificate; mTLS needs one (tls.cert and tls.key in the client's config)",
        "it requires a client certificate and we sent none",
        "Set tls.cert and tls.key.",
    ),
    TlsFailure.EXPIRED: (
        "the client's certificate has expired; renew it with 'securechat certs renew NAME'",
        "our certificate has expired",
        "Run 'securechat certs renew NAME'.",
    ),
    TlsFailure.NOT_YET_VALID: (
        "the client's certificate is not valid yet; check the clocks of the issuing machine and this one",
        "our certificate is not valid yet",
        "Check the clocks of the issuing machine and this one.",
    ),
    TlsFailure.UNKNOWN_CA: (
        "the client's certificate is not signed by this server's tls.client_ca; issue it from that CA",
        "it does not trust the CA that signed our certificate",
        "Issue our certificate from the server's tls.client_ca, or add our CA to that bundle.",
    ),
    TlsFailure.WRONG_EKU: (
        "the client's certificate is not for client authentication (extended key usage); issue it with"
        " 'securechat certs client NAME'",
        "our certificate is not for client authentication (unsupported purpose)",
        "Use a certificate from 'securechat certs client NAME'.",
    ),
    TlsFailure.REVOKED: (
        "the client's certificate is revoked",
        "our certificate is revoked",
        "Ask for a new certificate.",
    ),
    TlsFailure.BAD_CERTIFICATE: (
        "the client's certificate was refused (bad certificate)",
        "it rejected our certificate (bad certificate)",
        "Check it with 'securechat certs inspect'.",
    ),
    TlsFailure.CLIENT_REJECTED_SERVER: (
        "the client broke off the handshake, most likely refusing this server's certificate: it must trust the"
        " CA that issued tls.cert, and the name it dials must be one of that certificate's SANs",
        "we refused the server's certificate",
        "Point tls.ca at the CA that signed the server's certificate, and dial a name it covers.",
    ),
    TlsFailure.SERVER_NAME_MISMATCH: (
        "the client refused this server's certificate: the name it dials is not among the certificate's SANs",
        "the server's certificate does not cover the name we dial",
        "Issue the server certificate with '--san HOST', or set tls.server_name.",
    ),
    TlsFailure.UNTRUSTED_SERVER: (
        "the client does not trust the CA that issued this server's tls.cert",
        "the server's certificate is not signed by the CA in our tls.ca",
        "Point tls.ca at the CA that signed the server's certificate.",
    ),
    TlsFailure.NOT_TLS: (
        "the peer did not speak TLS (a plaintext gRPC or HTTP client on the TLS port?)",
        "the other side does not speak TLS",
        "Connect to the TLS port, or configure TLS on both sides.",
    ),
    TlsFailure.UNREACHABLE: (
        "the connection did not get far enough for TLS",
        "the server cannot be reached",
        "Start the server, or fix target.",
    ),
    TlsFailure.OTHER: (
        "the TLS handshake failed for a reason securechat does not recognise",
        "the TLS handshake failed",
        "Check the server's log.",
    ),
}


# gRPC core's (BoringSSL's) wording in a "Handshake failed" line, per reason; first match wins.
_CORE_NEEDLES: tuple[tuple[TlsFailure, tuple[str, ...]], ...] = (
    (TlsFailure.NO_CERTIFICATE, ("PEER_DID_NOT_RETURN_A_CERTIFICATE",)),
    (TlsFailure.EXPIRED, ("certificate has expired",)),
    (TlsFailure.NOT_YET_VALID, ("certificate is not yet valid",)),
    (TlsFailure.REVOKED, ("certificate revoked",)),
    (
        TlsFailure.UNKNOWN_CA,
        ("unable to get local issuer certificate", "self-signed certificate", "self signed certificate"),
    ),
    (TlsFailure.WRONG_EKU, ("unsupported certificate purpose",)),
    # A client that refuses our certificate aborts with an alert, which
    # BoringSSL reports as BAD_PACKET_LENGTH (seen with OpenSSL and Python
    # clients), or as the alert itself.
    (
        TlsFailure.CLIENT_REJECTED_SERVER,
        ("BAD_PACKET_LENGTH", "ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_UNKNOWN"),
    ),
    (TlsFailure.NOT_TLS, ("HTTP_REQUEST", "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTPS_PROXY_REQUEST")),
)


def from_core_log(message: str) -> TlsFailure | None:
    """The reason in gRPC core's log MESSAGE if it reports a failed handshake ('Handshake failed ...'), else None."""
    if not message.startswith("Handshake failed"):
        return None
    for failure, needles in _CORE_NEEDLES:
        if any(needle in message for needle in needles):
            return failure
    return TlsFailure.OTHER


# TLS alert reasons (OpenSSL's names, as Python's ssl reports what the server sent).
_ALERTS: tuple[tuple[str, TlsFailure], ...] = (
    ("UNKNOWN_CA", TlsFailure.UNKNOWN_CA),
    ("CERTIFICATE_REQUIRED", TlsFailure.NO_CERTIFICATE),
    ("CERTIFICATE_EXPIRED", TlsFailure.EXPIRED),
    ("UNSUPPORTED_CERTIFICATE", TlsFailure.WRONG_EKU),
    ("CERTIFICATE_REVOKED", TlsFailure.REVOKED),
    ("BAD_CERTIFICATE", TlsFailure.BAD_CERTIFICATE),
)


def from_alert(reason: str) -> TlsFailure:
    """The failure a TLS alert REASON (e.g. 'TLSV1_ALERT_UNKNOWN_CA') stands for; OTHER when unknown."""
    return next((failure for key, failure in _ALERTS if key in reason), TlsFailure.OTHER)


def from_status(details: str) -> TlsFailure | None:
    """What a client's UNAVAILABLE status DETAILS say about TLS, if anything (None: not a TLS failure we can name).

    A refusal of our certificate by a gRPC server is only a "Socket closed"
    here (core closes without the alert): that is BAD_CERTIFICATE, and
    `diagnose` with local evidence narrows it down.
    """
    if "Connection refused" in details or "DNS resolution failed" in details or "No route to host" in details:
        return TlsFailure.UNREACHABLE
    if "Hostname Verification" in details or "Peer name" in details:
        return TlsFailure.SERVER_NAME_MISMATCH
    if "CERTIFICATE_VERIFY_FAILED" in details:
        return TlsFailure.UNTRUSTED_SERVER
    if "WRONG_VERSION_NUMBER" in details or "WRONG_VERSION" in details:
        return TlsFailure.NOT_TLS
    if "Socket closed" in details or "Connection reset" in details or "handshake" in details.lower():
        return TlsFailure.BAD_CERTIFICATE
    return None


_PROBLEMS: dict[Code, TlsFailure] = {
    Code.EXPIRED: TlsFailure.EXPIRED,
    Code.NOT_YET_VALID: TlsFailure.NOT_YET_VALID,
    Code.WRONG_EKU: TlsFailure.WRONG_EKU,
    Code.LEAF_IS_CA: TlsFailure.WRONG_EKU,
    Code.KEY_USAGE: TlsFailure.WRONG_EKU,
    Code.REVOKED: TlsFailure.REVOKED,
    Code.SAN_MISMATCH: TlsFailure.SERVER_NAME_MISMATCH,
}


def from_problem(problem: Problem) -> TlsFailure:
    """The handshake failure a local PROBLEM with our own certificate would cause at a verifying peer."""
    if problem.code in CHAIN_CODES:
        return TlsFailure.UNKNOWN_CA
    return _PROBLEMS.get(problem.code, TlsFailure.BAD_CERTIFICATE)


@dataclass(frozen=True)
class Evidence:
    """What one side observed about a failed handshake; any part may be missing.

    `alert`: the TLS alert reason the peer sent (doctor reads it with `ssl`);
    `status_details`: a gRPC status's text; `sent_certificate`: whether we
    presented a client certificate; `local`: what `tls.checks` says about our
    own certificate (its first problem), when we have it.
    """

    alert: str | None = None
    status_details: str | None = None
    sent_certificate: bool = True
    local: Problem | None = None


def diagnose(evidence: Evidence) -> TlsFailure:
    """The one reason EVIDENCE supports, best evidence first: an alert, then what we know of our own certificate."""
    if evidence.alert:
        failure = from_alert(evidence.alert)
        if failure is not TlsFailure.OTHER:
            return failure
    stated = from_status(evidence.status_details) if evidence.status_details is not None else None
    if stated is not None and stated is not TlsFailure.BAD_CERTIFICATE:
        return stated
    # A bare close: work out what the server's verifier would have said about us.
    if not evidence.sent_certificate:
        return TlsFailure.NO_CERTIFICATE
    if evidence.local is not None:
        return from_problem(evidence.local)
    if stated is TlsFailure.BAD_CERTIFICATE or evidence.alert is not None:
        return TlsFailure.UNKNOWN_CA
    return TlsFailure.OTHER
