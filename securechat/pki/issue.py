"""Issue leaf certificates: the server and client profiles.

Both profiles (RFC 5280 section 4.2.1):
- subject `O=securechat, CN=NAME`; the identity lives in the SAN, which is
  what TLS stacks check — the CN is for people reading the certificate;
- basicConstraints CA:FALSE, critical;
- keyUsage digitalSignature (plus keyEncipherment for RSA, which TLS 1.2
  RSA key exchange needs), critical;
- exactly one extended key usage: serverAuth for servers, clientAuth for
  clients, so a stolen client key cannot impersonate a server and back;
- SAN non-critical (the subject is not empty, 4.2.1.6);
- subjectKeyIdentifier, and an authorityKeyIdentifier with the CA's key id;
- a random 159-bit positive serial (`x509.random_serial_number`);
- at most LEAF_MAX_DAYS, and never past the CA's own expiry.

A client's identity is NAME, as a DNS SAN: NAME is restricted to lowercase
DNS-style labels (see `names.validate_name`), so it is well-formed there, and
it is what a server reads back from the peer's verified certificate. With a
SPIFFE trust domain the cert also carries `spiffe://TD/NAME` as a URI SAN.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from securechat.errors import PkiError
from securechat.pki.ca import CertificateAuthority, authority_key_identifier, subject_name
from securechat.pki.inspect import extended_key_usages, subject_alternative_names
from securechat.pki.keys import (
    DEFAULT_KEY_TYPE,
    PrivateKey,
    generate_private_key,
    key_matches_certificate,
    key_type_name,
    signature_hash,
)
from securechat.pki.names import check_name_constraints, parse_san, spiffe_id, validate_name
from securechat.pki.validity import LEAF_DEFAULT_DAYS, LEAF_MAX_DAYS, lifetime_window, validity_window

CertificatePublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
"""The public keys a CSR may bring (`sign_leaf`): the same families securechat makes."""

_EKUS: dict[str, list[ObjectIdentifier]] = {
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "peer": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
}

LeafKind: TypeAlias = Literal["server", "client", "peer"]

DEFAULT_SERVER_SANS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
"""What a server certificate covers when no --san is given: this machine."""


@dataclass(frozen=True)
class IssuedCert:
    """A freshly issued leaf certificate and its private key."""

    name: str
    kind: LeafKind
    cert: x509.Certificate
    key: PrivateKey
    sans: tuple[x509.GeneralName, ...] = ()
    """The subjectAltName entries, as issued (the index records them without parsing CERT again)."""
    capped_at_ca_expiry: bool = False
    """True if the requested validity ran past the CA's expiry and was cut there."""
    chain: tuple[x509.Certificate, ...] = ()
    """The CA certificates written after the leaf in NAME.pem (the issuing
    intermediate and its parents); empty under a flat CA."""


@dataclass(frozen=True)
class SignedCert:
    """A leaf signed for someone else's key (a CSR): no private key here, ever."""

    name: str
    kind: LeafKind
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    """The CA certificates that follow the leaf in its chain file."""
    capped_at_ca_expiry: bool = False


def _leaf_key_usage(key_type: str) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,  # sign the TLS handshake (ECDHE, TLS 1.3 CertificateVerify)
        content_commitment=False,  # non-repudiation: not for TLS
        key_encipherment=key_type.startswith("rsa-"),  # RSA key transport, TLS 1.2 only
        data_encipherment=False,  # never encrypt data directly with the cert key
        key_agreement=False,  # no static (EC)DH
        key_cert_sign=False,  # a leaf signs no certificates
        crl_sign=False,  # nor CRLs
        encipher_only=False,  # only meaningful with key_agreement
        decipher_only=False,  # only meaningful with key_agreement
    )


def _extension(value: x509.ExtensionType, *, critical: bool) -> x509.Extension[x509.ExtensionType]:
    return x509.Extension(value.oid, critical, value)


def _profile_extensions(
    kind_ekus: list[ObjectIdentifier], key_type: str
) -> tuple[x509.Extension[x509.ExtensionType], ...]:
    """What comes before the SAN in every leaf of a profile: basicConstraints, keyUsage, extendedKeyUsage."""
    return (
        _extension(x509.BasicConstraints(ca=False, path_length=None), critical=True),
        _extension(_leaf_key_usage(key_type), critical=True),
        _extension(x509.ExtendedKeyUsage(kind_ekus), critical=False),
    )


def _signed_leaf(
    ca: CertificateAuthority,
    *,
    name: str,
    public_key: CertificatePublicKey,
    sans: list[x509.GeneralName],
    not_before: dt.datetime,
    not_after: dt.datetime,
    profile: tuple[x509.Extension[x509.ExtensionType], ...],
    authority_key_id: x509.Extension[x509.ExtensionType],
    algorithm: object,
) -> x509.Certificate:
    """One leaf: the profile's extensions, then SAN, SKI and the CA's AKI, in that order.

    The builder is made in one step (its chained methods copy it at each
    call): the same certificate, for half the work, which the online CA
    pays on every renewal.
    """
    check_name_constraints(ca.cert, sans)
    builder = x509.CertificateBuilder(
        issuer_name=ca.cert.subject,
        subject_name=subject_name(name),
        public_key=public_key,
        serial_number=x509.random_serial_number(),
        not_valid_before=not_before,
        not_valid_after=not_after,
        extensions=[
            *profile,
            _extension(x509.SubjectAlternativeName(sans), critical=False),
            _extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False),
            authority_key_id,
        ],
    )
    return builder.sign(private_key=ca.key, algorithm=algorithm)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _LeafProfile:
    """What every leaf of one profile and validity shares, built once for a whole batch.

    `extensions` are those that come before the SAN (basicConstraints,
    keyUsage, extendedKeyUsage); each leaf adds its subject, key, serial,
    SAN, SKI and the CA's AKI, in that extension order.
    """

    ca: CertificateAuthority
    kind: LeafKind
    key_type: str
    not_before: dt.datetime
    not_after: dt.datetime
    extensions: tuple[x509.Extension[x509.ExtensionType], ...]
    authority_key_id: x509.Extension[x509.ExtensionType]
    capped_at_ca_expiry: bool

    @classmethod
    def build(
        cls,
        ca: CertificateAuthority,
        *,
        kind: LeafKind,
        eku: ObjectIdentifier | list[ObjectIdentifier],
        key_type: str,
        days: int,
        not_before: dt.datetime | None,
        not_after: dt.datetime | None,
        lifetime: dt.timedelta | None = None,
    ) -> _LeafProfile:
        if lifetime is not None:
            validity = lifetime_window(lifetime, ca_not_after=ca.cert.not_valid_after_utc)
        else:
            validity = validity_window(
                days=days,
                max_days=LEAF_MAX_DAYS,
                not_before=not_before,
                not_after=not_after,
                ca_not_after=ca.cert.not_valid_after_utc,
            )
        return cls(
            ca=ca,
            kind=kind,
            key_type=key_type,
            not_before=validity.not_before,
            not_after=validity.not_after,
            extensions=_profile_extensions(eku if isinstance(eku, list) else [eku], key_type),
            authority_key_id=_extension(authority_key_identifier(ca), critical=False),
            capped_at_ca_expiry=validity.capped_at_ca_expiry,
        )

    def issue(self, name: str, sans: list[x509.GeneralName], key: PrivateKey | None = None) -> IssuedCert:
        key = key or generate_private_key(self.key_type)
        return IssuedCert(
            name=name,
            kind=self.kind,
            cert=self.sign(name, sans, key.public_key()),
            key=key,
            sans=tuple(sans),
            capped_at_ca_expiry=self.capped_at_ca_expiry,
            chain=self.ca.leaf_chain,
        )

    def sign(self, name: str, sans: list[x509.GeneralName], public_key: CertificatePublicKey) -> x509.Certificate:
        return _signed_leaf(
            self.ca,
            name=name,
            public_key=public_key,
            sans=sans,
            not_before=self.not_before,
            not_after=self.not_after,
            profile=self.extensions,
            authority_key_id=self.authority_key_id,
            algorithm=signature_hash(self.ca.key),
        )


def _server_sans(name: str, sans: Iterable[str] | None) -> list[x509.GeneralName]:
    texts = list(DEFAULT_SERVER_SANS if sans is None else sans)
    if not texts:
        raise PkiError(f"certificate {name!r} needs at least one SAN. Pass --san HOST, e.g. --san localhost.")
    general_names: list[x509.GeneralName] = []
    for text in texts:
        general_name = parse_san(text)
        if general_name not in general_names:  # a repeated --san is harmless; don't encode it twice
            general_names.append(general_name)
    return general_names


def issue_peer_cert(
    ca: CertificateAuthority,
    name: str,
    *,
    sans: Iterable[str],
    key_type: str = DEFAULT_KEY_TYPE,
    days: int = LEAF_DEFAULT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> IssuedCert:
    """Issue a certificate with BOTH serverAuth and clientAuth for NAME covering SANS.

    For cluster members that dial each other with the same certificate they
    serve with, e.g. NATS cluster routes (each node is the TLS server of the
    routes it accepts and the client of those it opens, and nats-server uses
    one cert for both). Chat servers and chat clients keep their one-purpose
    profiles: a peer certificate would let a server pose as a client.
    """
    validate_name(name)
    general_names = _server_sans(name, sans)
    profile = _LeafProfile.build(
        ca,
        kind="peer",
        eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        key_type=key_type,
        days=days,
        not_before=not_before,
        not_after=not_after,
    )
    return profile.issue(name, general_names)


def issue_server_cert(
    ca: CertificateAuthority,
    name: str,
    *,
    sans: Iterable[str] | None = None,
    key_type: str = DEFAULT_KEY_TYPE,
    days: int = LEAF_DEFAULT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> IssuedCert:
    """Issue a serverAuth-only certificate for NAME covering SANS (DNS names and IPs).

    SANS default to DEFAULT_SERVER_SANS. NOT_BEFORE / NOT_AFTER override the
    validity window, e.g. to make an expired certificate for a test.
    """
    validate_name(name)
    general_names = _server_sans(name, sans)
    profile = _LeafProfile.build(
        ca,
        kind="server",
        eku=ExtendedKeyUsageOID.SERVER_AUTH,
        key_type=key_type,
        days=days,
        not_before=not_before,
        not_after=not_after,
    )
    return profile.issue(name, general_names)


def issue_client_cert(
    ca: CertificateAuthority,
    name: str,
    *,
    key_type: str = DEFAULT_KEY_TYPE,
    days: int = LEAF_DEFAULT_DAYS,
    spiffe_trust_domain: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> IssuedCert:
    """Issue a clientAuth-only certificate whose identity is NAME (CN and DNS SAN).

    With SPIFFE_TRUST_DOMAIN, it also carries the URI SAN `spiffe://TD/NAME`.
    NOT_BEFORE / NOT_AFTER override the validity window.
    """
    return issue_client_certs(
        ca,
        [name],
        key_type=key_type,
        days=days,
        spiffe_trust_domain=spiffe_trust_domain,
        not_before=not_before,
        not_after=not_after,
    )[0]


def issue_client_certs(
    ca: CertificateAuthority,
    names: Sequence[str],
    *,
    key_type: str = DEFAULT_KEY_TYPE,
    days: int = LEAF_DEFAULT_DAYS,
    spiffe_trust_domain: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> list[IssuedCert]:
    """`issue_client_cert` for each of NAMES, in order, sharing one validity window.

    Every name is checked before any key is generated.
    """
    for name in names:
        validate_name(name)
    profile = _LeafProfile.build(
        ca,
        kind="client",
        eku=ExtendedKeyUsageOID.CLIENT_AUTH,
        key_type=key_type,
        days=days,
        not_before=not_before,
        not_after=not_after,
    )
    return [profile.issue(name, _client_sans(name, spiffe_trust_domain)) for name in names]


def _client_sans(name: str, spiffe_trust_domain: str | None) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = [x509.DNSName(name)]
    if spiffe_trust_domain is not None:
        sans.append(x509.UniformResourceIdentifier(spiffe_id(spiffe_trust_domain, name)))
    return sans


def reissue(
    ca: CertificateAuthority,
    name: str,
    old: x509.Certificate,
    *,
    key: PrivateKey | None = None,
    days: int = LEAF_DEFAULT_DAYS,
) -> IssuedCert:
    """Renew OLD: the same identity, SANs and EKU, a new serial and validity.

    The new key is KEY when given (`--keep-key`), else a fresh key of OLD's
    key type. Raises PkiError if OLD is neither a server nor a client
    certificate, or KEY does not belong to OLD.
    """
    validate_name(name)
    ekus = extended_key_usages(old)
    eku: ObjectIdentifier | list[ObjectIdentifier]
    if ExtendedKeyUsageOID.SERVER_AUTH in ekus and ExtendedKeyUsageOID.CLIENT_AUTH in ekus:
        kind: LeafKind = "peer"
        eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    elif ExtendedKeyUsageOID.SERVER_AUTH in ekus:
        kind = "server"
        eku = ExtendedKeyUsageOID.SERVER_AUTH
    elif ExtendedKeyUsageOID.CLIENT_AUTH in ekus:
        kind, eku = "client", ExtendedKeyUsageOID.CLIENT_AUTH
    else:
        raise PkiError(
            f"{name}: its certificate is neither a server nor a client certificate, so it cannot be renewed."
            f" Issue it anew with 'securechat certs server|client {name} --force'."
        )
    if key is not None and not key_matches_certificate(key, old):
        raise PkiError(f"{name}: the key on disk does not match its certificate. Renew without --keep-key.")
    profile = _LeafProfile.build(
        ca,
        kind=kind,
        eku=eku,
        key_type=key_type_name(old.public_key()),
        days=days,
        not_before=None,
        not_after=None,
    )
    return profile.issue(name, subject_alternative_names(old), key=key)


class LeafSigner:
    """`sign_leaf` for one CA, with what does not depend on the request made once: the issuer's AKI, the
    extensions of each profile, the signature hash. The online CA keeps one and signs every renewal with it."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self._authority_key_id = _extension(authority_key_identifier(ca), critical=False)
        self._algorithm = signature_hash(ca.key)
        self._ca_not_after = ca.cert.not_valid_after_utc
        self._profiles: dict[tuple[LeafKind, str], tuple[x509.Extension[x509.ExtensionType], ...]] = {}

    def sign(
        self,
        name: str,
        public_key: CertificatePublicKey,
        *,
        kind: LeafKind,
        sans: Sequence[x509.GeneralName],
        lifetime: dt.timedelta,
    ) -> SignedCert:
        """What `sign_leaf` says, for this signer's CA."""
        validate_name(name)
        if not sans:
            raise PkiError(f"certificate {name!r} needs at least one SAN.")
        key_type = key_type_name(public_key)
        slot = (kind, key_type)
        profile = self._profiles.get(slot)
        if profile is None:
            profile = self._profiles[slot] = _profile_extensions(_EKUS[kind], key_type)
        validity = lifetime_window(lifetime, ca_not_after=self._ca_not_after)
        cert = _signed_leaf(
            self.ca,
            name=name,
            public_key=public_key,
            sans=list(sans),
            not_before=validity.not_before,
            not_after=validity.not_after,
            profile=profile,
            authority_key_id=self._authority_key_id,
            algorithm=self._algorithm,
        )
        return SignedCert(
            name=name, kind=kind, cert=cert, chain=self.ca.leaf_chain, capped_at_ca_expiry=validity.capped_at_ca_expiry
        )


def sign_leaf(
    ca: CertificateAuthority,
    name: str,
    public_key: CertificatePublicKey,
    *,
    kind: LeafKind,
    sans: Sequence[x509.GeneralName],
    lifetime: dt.timedelta,
) -> SignedCert:
    """Sign a KIND leaf for NAME with SANS for someone else's PUBLIC_KEY, valid for LIFETIME.

    The profile is the one `issue_server_cert` / `issue_client_cert` use
    (one EKU per kind, both for "peer"); the caller decides NAME, KIND and
    SANS (the online CA takes them from a token or the current certificate,
    never from the CSR alone). Capped at the CA's expiry. A caller signing
    many keeps a `LeafSigner(ca)`, which does the same.
    """
    return LeafSigner(ca).sign(name, public_key, kind=kind, sans=sans, lifetime=lifetime)
