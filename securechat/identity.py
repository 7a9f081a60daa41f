"""Who is calling: the identity in the peer's verified client certificate.

gRPC has already verified the chain to the client CA when it hands us the
peer's PEM in the auth context; here we decide what that certificate says.
The identity is the certificate's DNS subjectAltName that equals its CN
(or its first DNS SAN); a CN alone is never trusted. A certificate without
the clientAuth extended key usage (a server certificate, say) is refused,
whatever the TLS layer allowed.

Not checked here: revocation and authorization (the server's interceptor
does both with this result).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM_CERT_KEY = "x509_pem_cert"


class PeerRejected(Exception):
    """The peer's certificate cannot name a client; the text says why."""


@dataclass(frozen=True)
class PeerIdentity:
    name: str
    spiffe_id: str
    serial: str
    not_after: str

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> PeerIdentity:
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = ()
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            raise PeerRejected(f"certificate serial {cert.serial_number:x} is not a client certificate (no clientAuth extended key usage)")
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise PeerRejected(f"certificate serial {cert.serial_number:x} has no subjectAltName naming the client") from None
        dns_names = sans.get_values_for_type(x509.DNSName)
        spiffe = next((uri for uri in sans.get_values_for_type(x509.UniformResourceIdentifier) if uri.startswith("spiffe://")), "")
        common_names = [attr.value for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        name = next((cn for cn in common_names if cn in dns_names), dns_names[0] if dns_names else "")
        if not name:
            raise PeerRejected(f"certificate serial {cert.serial_number:x} has no DNS subjectAltName naming the client")
        return cls(
            name=str(name),
            spiffe_id=spiffe,
            serial=f"{cert.serial_number:x}",
            not_after=cert.not_valid_after_utc.isoformat(),
        )


@functools.lru_cache(maxsize=4096)
def identity_from_pem(pem: bytes) -> PeerIdentity:
    """Parse once per distinct certificate; every call of a stream reuses it."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PeerRejected("the peer certificate could not be parsed") from exc
    return PeerIdentity.from_certificate(cert)


def peer_certificate_pem(auth_context: dict[str, list[bytes]]) -> bytes | None:
    """The verified peer certificate gRPC put in the auth context, if any."""
    values = auth_context.get(PEM_CERT_KEY)
    return values[0] if values else None
