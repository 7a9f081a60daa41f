"""Test certificate chains built with `cryptography` directly: roots, intermediates and leaves of any shape.

`securechat.pki` only issues what is right; the decision core must also be
shown what is wrong (a CA:TRUE leaf, a pathLen violation, a leaf without
digitalSignature, a hostile DNS SAN), so these helpers can make both. Every
certificate is real: real keys, real signatures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER = ExtendedKeyUsageOID.SERVER_AUTH


@dataclass(frozen=True)
class Cert:
    """A certificate and its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tests"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def make_ca(
    common_name: str,
    issuer: Cert | None = None,
    *,
    path_length: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    ca: bool = True,
    cert_sign: bool = True,
) -> Cert:
    """A CA: self-signed without ISSUER, else signed by it. CA=False makes a 'CA' without CA:TRUE."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    signer_key = key if issuer is None else issuer.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - HOUR)
        .not_valid_after(not_after or NOW + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, cert_sign, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False)
    )
    return Cert(builder.sign(signer_key, hashes.SHA256()), key)


def make_leaf(
    issuer: Cert,
    dns: Sequence[str] = ("alice",),
    *,
    common_name: str | None = None,
    uris: Sequence[str] = (),
    ips: Sequence[str] = (),
    eku: Sequence[x509.ObjectIdentifier] | None = (CLIENT,),
    ca: bool = False,
    digital_signature: bool = True,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Cert:
    """A leaf signed by ISSUER, with DNS SANs DNS (the first is also the CN), URI SANs and EKU (None: no EKU)."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    # Unvalidated: a hostile CA can put any bytes in a DNS SAN, and so must these tests.
    sans: list[x509.GeneralName] = [x509.DNSName._init_without_validation(d) for d in dns]
    sans += [x509.UniformResourceIdentifier._init_without_validation(u) for u in uris]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cn = common_name if common_name is not None else (dns[0] if dns else "leaf")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn[:64] or "x")]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - HOUR)
        .not_valid_after(not_after or NOW + 90 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature, False, False, False, False, ca, ca, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Cert(builder.sign(issuer.key, hashes.SHA256()), key)


def make_crl(
    issuer: Cert,
    revoked: Sequence[Cert | int] = (),
    *,
    number: int = 1,
    issuer_name: x509.Name | None = None,
    next_update: dt.datetime | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by ISSUER listing REVOKED (certificates or serials), cRLNumber NUMBER."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_name or issuer.cert.subject)
        .last_update(min(NOW - HOUR, (next_update or NOW) - 2 * DAY))
        .next_update(next_update or NOW + 7 * DAY)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    )
    for item in revoked:
        serial = item if isinstance(item, int) else item.cert.serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - HOUR).build()
        )
    return builder.sign(issuer.key, hashes.SHA256())


def crl_pem(*crls: x509.CertificateRevocationList) -> bytes:
    return b"".join(crl.public_bytes(serialization.Encoding.PEM) for crl in crls)


def write_pair(directory: Path, name: str, leaf: Cert, *chain: Cert) -> tuple[Path, Path]:
    """NAME.pem (leaf + CHAIN) and NAME-key.pem (0600) in DIRECTORY."""
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(leaf.pem + b"".join(c.pem for c in chain))
    key_path.write_bytes(leaf.key_pem)
    key_path.chmod(0o600)
    return cert_path, key_path
