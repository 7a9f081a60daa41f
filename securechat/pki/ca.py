"""Create a certificate authority: a flat CA, or a root and its issuing intermediate.

The CA profile, and why (RFC 5280 section 4.2.1):
- basicConstraints CA:TRUE, critical (4.2.1.9 requires critical on CA
  certificates). A flat CA and an issuing intermediate have pathLen 0: they
  sign leaves but no further CAs. A root made for a hierarchy
  (`create_root_ca`) has pathLen 1: it signs intermediates, and those sign
  leaves; its key is needed only for a new intermediate, so it can be kept
  offline;
- keyUsage keyCertSign + cRLSign, critical — it signs certificates and the
  CRL, nothing else (4.2.1.3);
- subjectKeyIdentifier (required on CA certificates, 4.2.1.2) and an
  authorityKeyIdentifier holding the issuer's key id only (4.2.1.1);
- an intermediate may carry the same critical nameConstraints as a flat CA
  (`--permit-dns`): a leaf outside them fails path validation everywhere;
- subject `O=securechat, CN=<name>`: never empty, since the subject of a CA
  is the issuer name of everything it signs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from securechat.errors import PkiError
from securechat.pki.keys import (
    DEFAULT_KEY_TYPE,
    PrivateKey,
    generate_private_key,
    key_matches_certificate,
    signature_hash,
)
from securechat.pki.names import MAX_NAME_LENGTH, permitted_subtree
from securechat.pki.validity import CA_DEFAULT_DAYS, CA_MAX_DAYS, validity_window

DEFAULT_CA_COMMON_NAME = "securechat CA"
ORGANIZATION = "securechat"
INTERMEDIATE_DEFAULT_DAYS = 1825
"""Five years: long enough to be rare work for the offline root, short beside the root's ten."""
ROOT_PATH_LENGTH = 1
"""root -> intermediate -> leaf: the root may sign CAs that sign leaves only."""


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its private key, ready to sign leaves.

    `parents` holds the CA certificates between this one and the trust
    anchor (nearest first, the anchor itself left out): empty for a root or
    for an intermediate signed directly by its root.
    """

    cert: x509.Certificate
    key: PrivateKey
    parents: tuple[x509.Certificate, ...] = ()

    @property
    def is_root(self) -> bool:
        """True for a self-signed CA: it is its own trust anchor."""
        return self.cert.issuer == self.cert.subject and _self_signed(self.cert)

    @property
    def leaf_chain(self) -> tuple[x509.Certificate, ...]:
        """What a leaf's file carries after the leaf: nothing under a root, else this CA and its parents.

        A server presents its file whole, so a peer that trusts only the root
        can build the path (RFC 8446 4.4.2: the sender's certificate first,
        each following one certifying the one before).
        """
        return () if self.is_root else (self.cert, *self.parents)


def _self_signed(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def subject_name(common_name: str) -> x509.Name:
    """`O=securechat, CN=<common_name>`: the subject every securechat certificate carries."""
    if not common_name.strip() or len(common_name) > MAX_NAME_LENGTH:
        raise PkiError(
            f"common name {common_name[:20]!r} must be 1 to {MAX_NAME_LENGTH} characters. Pass a shorter --name."
        )
    if not common_name.isprintable() or common_name != common_name.strip():
        # A newline or escape in a subject reaches every log line and terminal that
        # prints an issuer name; isprintable() is False for control, format (bidi)
        # and separator characters other than the plain space.
        raise PkiError(
            f"common name {common_name[:40]!r} holds a control character or surrounding space."
            " Pass a --name of printable text."
        )
    return x509.Name(
        [
            # Most significant first (O before CN), as RFC 4514 renders it reversed.
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_ca(
    *,
    common_name: str = DEFAULT_CA_COMMON_NAME,
    key_type: str = DEFAULT_KEY_TYPE,
    days: int = CA_DEFAULT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    permitted_dns: tuple[str, ...] = (),
    path_length: int | None = 0,
) -> CertificateAuthority:
    """Make a new self-signed CA with a fresh KEY_TYPE key, valid for DAYS.

    NOT_BEFORE / NOT_AFTER override the validity window (for tests that
    need an expired or not-yet-valid CA). PERMITTED_DNS adds a critical
    nameConstraints extension (RFC 5280 4.2.1.10 requires critical) that lets
    it issue DNS names only under those domains. PATH_LENGTH is how many CAs
    may follow it in a path: 0 (the default) for a flat CA that signs leaves;
    see `create_root_ca` for a root.
    """
    subtrees = [permitted_subtree(text) for text in permitted_dns]  # bad input fails before a key is made
    name = subject_name(common_name)
    validity = validity_window(days=days, max_days=CA_MAX_DAYS, not_before=not_before, not_after=not_after)
    key = generate_private_key(key_type)
    cert = _ca_builder(
        name, name, key.public_key(), validity.not_before, validity.not_after, path_length, subtrees, None
    ).sign(private_key=key, algorithm=signature_hash(key))
    return CertificateAuthority(cert=cert, key=key)


def create_root_ca(
    *,
    common_name: str = DEFAULT_CA_COMMON_NAME,
    key_type: str = DEFAULT_KEY_TYPE,
    days: int = CA_DEFAULT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> CertificateAuthority:
    """A self-signed root for a two-level hierarchy: it signs intermediates (pathLen 1), not leaves."""
    return create_ca(
        common_name=common_name,
        key_type=key_type,
        days=days,
        not_before=not_before,
        not_after=not_after,
        path_length=ROOT_PATH_LENGTH,
    )


def issue_intermediate(
    parent: CertificateAuthority,
    *,
    common_name: str | None = None,
    key_type: str = DEFAULT_KEY_TYPE,
    days: int = INTERMEDIATE_DEFAULT_DAYS,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    permitted_dns: tuple[str, ...] = (),
    path_length: int = 0,
) -> CertificateAuthority:
    """A new issuing CA signed by PARENT (a root, or an intermediate that may sign CAs).

    It has a fresh KEY_TYPE key, pathLen PATH_LENGTH (0: it signs leaves
    only) and, with PERMITTED_DNS, critical name constraints. It never
    outlives PARENT. The default common name is the parent's plus
    "intermediate" and the moment it was made, so two intermediates of one
    root never share an issuer name (a CRL names its issuer; serials are
    only unique per issuer).
    """
    subtrees = [permitted_subtree(text) for text in permitted_dns]
    parent_constraints = _basic_constraints(parent.cert)
    if parent_constraints is None or not parent_constraints.ca:
        raise PkiError(
            "the parent is not a CA certificate, so it cannot sign an intermediate. Use the root's root.pem."
        )
    if parent_constraints.path_length is not None and parent_constraints.path_length < path_length + 1:
        raise PkiError(
            f"the parent CA has pathLen {parent_constraints.path_length}, so it cannot sign another CA."
            " Sign the intermediate with the root (securechat certs intermediate --root-dir DIR)."
        )
    validity = validity_window(
        days=days,
        max_days=CA_MAX_DAYS,
        not_before=not_before,
        not_after=not_after,
        ca_not_after=parent.cert.not_valid_after_utc,
    )
    if common_name is None:
        parent_cn = parent.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        base = str(parent_cn[0].value) if parent_cn else DEFAULT_CA_COMMON_NAME
        common_name = f"{base[: MAX_NAME_LENGTH - 30]} intermediate {validity.not_before:%Y-%m-%dT%H%M%SZ}"
    key = generate_private_key(key_type)
    cert = _ca_builder(
        subject_name(common_name),
        parent.cert.subject,
        key.public_key(),
        validity.not_before,
        validity.not_after,
        path_length,
        subtrees,
        authority_key_identifier(parent),
    ).sign(private_key=parent.key, algorithm=signature_hash(parent.key))
    parents = () if parent.is_root else (parent.cert, *parent.parents)
    return CertificateAuthority(cert=cert, key=key, parents=parents)


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: object,
    not_before: dt.datetime,
    not_after: dt.datetime,
    path_length: int | None,
    subtrees: list[x509.GeneralName],
    issuer_key_id: x509.AuthorityKeyIdentifier | None,
) -> x509.CertificateBuilder:
    """Every CA certificate's profile; ISSUER_KEY_ID None means self-signed (the AKI is its own SKI)."""
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)  # type: ignore[arg-type]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,  # the CA signs certificates and CRLs, not TLS handshakes
                content_commitment=False,  # non-repudiation: not for a CA
                key_encipherment=False,  # no key transport
                data_encipherment=False,  # no encryption
                key_agreement=False,  # no key agreement
                key_cert_sign=True,  # sign leaf certificates
                crl_sign=True,  # sign the revocation list (crl.pem)
                encipher_only=False,  # only meaningful with key_agreement
                decipher_only=False,  # only meaningful with key_agreement
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        # Key id only: an issuer name + serial in the AKI would pin the CA
        # cert itself and break a re-signed CA (RFC 5280 4.2.1.1).
        .add_extension(
            issuer_key_id or x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    if subtrees:
        builder = builder.add_extension(
            x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None), critical=True
        )
    return builder


def check_ca(ca: CertificateAuthority, *, where: str = "the CA") -> CertificateAuthority:
    """Return CA if its cert is a CA matching its key, else raise PkiError naming WHERE."""
    constraints = _basic_constraints(ca.cert)
    if constraints is None or not constraints.ca:
        raise PkiError(f"{where} is not a CA certificate (no basicConstraints CA:TRUE). Point to the CA's ca.pem.")
    if not key_matches_certificate(ca.key, ca.cert):
        raise PkiError(f"{where}: the CA key does not match the CA certificate. Restore the matching ca-key.pem.")
    return ca


def authority_key_identifier(ca: CertificateAuthority) -> x509.AuthorityKeyIdentifier:
    """The AKI for what CA signs (leaves and CRLs): its subjectKeyIdentifier, else one from its key."""
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
