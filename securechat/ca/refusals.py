"""Why the online CA refused: a reason (data, in trailing metadata) beside a message for people.

The reason goes out as `securechat-refusal` (the key the chat server uses,
see `securechat.protocol`); clients act on it, never on the text.
"""

from __future__ import annotations

import enum

import grpc


class RefusalReason(str, enum.Enum):
    # Reason words sent to the caller, not secrets (ruff's S105 reads "token" as a password).
    TOKEN_UNKNOWN = "token-unknown"  # noqa: S105
    TOKEN_USED = "token-used"  # noqa: S105
    TOKEN_EXPIRED = "token-expired"  # noqa: S105
    NAME_MISMATCH = "name-mismatch"
    SAN_NOT_ALLOWED = "san-not-allowed"
    BAD_CSR = "bad-csr"
    BAD_NAME = "bad-name"
    SAME_KEY = "same-key"
    NO_CERTIFICATE = "no-certificate"
    BAD_PROOF = "bad-proof"
    UNTRUSTED = "untrusted"
    EXPIRED = "expired"
    REVOKED = "revoked"
    UNKNOWN_CERTIFICATE = "unknown-certificate"
    CA_UNAVAILABLE = "ca-unavailable"


CODES: dict[RefusalReason, grpc.StatusCode] = {
    RefusalReason.TOKEN_UNKNOWN: grpc.StatusCode.UNAUTHENTICATED,
    RefusalReason.TOKEN_USED: grpc.StatusCode.UNAUTHENTICATED,
    RefusalReason.TOKEN_EXPIRED: grpc.StatusCode.UNAUTHENTICATED,
    RefusalReason.NAME_MISMATCH: grpc.StatusCode.PERMISSION_DENIED,
    RefusalReason.SAN_NOT_ALLOWED: grpc.StatusCode.PERMISSION_DENIED,
    RefusalReason.BAD_CSR: grpc.StatusCode.INVALID_ARGUMENT,
    RefusalReason.BAD_NAME: grpc.StatusCode.INVALID_ARGUMENT,
    RefusalReason.SAME_KEY: grpc.StatusCode.INVALID_ARGUMENT,
    RefusalReason.NO_CERTIFICATE: grpc.StatusCode.UNAUTHENTICATED,
    RefusalReason.BAD_PROOF: grpc.StatusCode.UNAUTHENTICATED,
    RefusalReason.UNTRUSTED: grpc.StatusCode.UNAUTHENTICATED,
    RefusalReason.EXPIRED: grpc.StatusCode.UNAUTHENTICATED,
    RefusalReason.REVOKED: grpc.StatusCode.PERMISSION_DENIED,
    RefusalReason.UNKNOWN_CERTIFICATE: grpc.StatusCode.PERMISSION_DENIED,
    RefusalReason.CA_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


class CaRefusal(Exception):
    """The CA will not issue: `reason` for machines, the text for people."""

    def __init__(self, reason: RefusalReason, message: str, *, identity: str = "", serial: str = "") -> None:
        self.reason = reason
        self.message = message
        self.identity = identity
        """Who asked, when known (the token's name, the certificate's identity): for the audit line."""
        self.serial = serial
        """The certificate that asked to renew, when known."""
        super().__init__(message)

    @property
    def code(self) -> grpc.StatusCode:
        return CODES[self.reason]
