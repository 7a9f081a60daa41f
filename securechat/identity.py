"""Who is calling: the identity in the peer's verified client certificate.

gRPC has already verified the chain to the client CA when it hands us the
peer's PEM in the auth context; here we decide what that certificate says.
The identity is the certificate's DNS subjectAltName that equals its CN
(or its first DNS SAN); a CN alone is never trusted. A certificate without
the clientAuth extended key usage (a server certificate, say) is refused,
whatever the TLS layer allowed.

`AuthzPolicy` decides which identities may call which methods (config
`authz:`); an entry names a client by its identity (`alice`), by its SPIFFE
ID (`spiffe://example.org/alice`), or `*` for any verified client.

Not checked here: revocation (the server's lifecycle does that with this
result, against the CRL).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

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
    issuer: str = ""
    """RFC 4514 name of the issuing CA: a serial is only unique per issuer."""

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
            issuer=cert.issuer.rfc4514_string(),
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


ANY_IDENTITY = "*"


@dataclass(frozen=True)
class AuthzPolicy:
    """Who may call what: `allow` for every method, `methods` to override it per method.

    `methods` maps a full method name (`/securechat.v1.ChatService/Chat`) or a
    whole service (`/grpc.health.v1.Health/*`) to the identities allowed
    there; a method listed there ignores `allow`. `allow=None` with no
    matching `methods` entry admits every verified client, as having no
    `authz:` section does.
    """

    allow: frozenset[str] | None = None
    methods: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def allowed(self, identities: frozenset[str] | None, peer: PeerIdentity) -> bool:
        if identities is None or ANY_IDENTITY in identities:
            return True
        return peer.name in identities or (bool(peer.spiffe_id) and peer.spiffe_id in identities)

    def permits(self, peer: PeerIdentity, method: str) -> bool:
        """True if PEER may call METHOD ('/package.Service/Method')."""
        service = method.rsplit("/", 1)[0]
        rule = self.methods.get(method, self.methods.get(f"{service}/*", self.allow))
        return self.allowed(rule, peer)

    def rule_for(self, method: str) -> str:
        """The config entry that decides METHOD, as a person would look it up: authz.methods['...'] or authz.allow."""
        service = method.rsplit("/", 1)[0]
        for key in (method, f"{service}/*"):
            if key in self.methods:
                return f"authz.methods['{key}']"
        return "authz.allow"
