"""The ONE place that decides whether a certificate, a key or a chain is good.

Every caller that checks a certificate against a CA -- the config loader
(`tls.material`), `doctor`, the server's per-peer check (`tls.identity`),
the broker's TLS, and the online CA's CSR/renewal checks -- asks here, so
they cannot disagree. Nothing here prints, logs or raises for a broken
certificate: problems come back as data (`Problem(code, field, message,
fix)`), and the caller raises, renders or refuses with them.

    verify_chain(leaf, intermediates, anchors, *, purpose, now, crls, server_name) -> Verdict
    check_key(leaf, key) -> Problem | None             the key belongs to the certificate
    check_possession(leaf, signature, message)         a signature proves the sender holds leaf's key
    check_anchors(anchors) -> Problem | None           every trust anchor is a CA
    match_identity(leaf, expected) -> Problem | None   a DNS or SPIFFE identity, by kind
    verify_crl(crl, signers, *, where) -> RevocationList | Problem
    RevocationIndex(lists).revoked(issuer_key, serial) -> RevocationList | None

What `verify_chain` decides, in this order (the first problem is what a
loader reports; `doctor` shows them all):
1. the leaf: valid now; an end entity (basicConstraints CA:FALSE or absent);
   the extended key usage for PURPOSE (clientAuth / serverAuth), which must
   be present; keyUsage, when present, with digitalSignature (TLS signs the
   handshake with it; an absent keyUsage means "any use", RFC 5280 4.2.1.3).
2. the path to a trust anchor, built by securechat itself: each issuer found
   by name *and* signature; every CA on it basicConstraints CA:TRUE, with
   keyCertSign, valid now, its pathLen respected (RFC 5280 4.2.1.9: the
   number of intermediate CAs below it, the leaf not counted) and its DNS
   name constraints kept by the leaf's DNS SANs.
3. the same path through cryptography's verifier (`x509.verification`,
   webpki rules: signatures, validity, basicConstraints, pathLen, name
   constraints, EKU, key sizes), as a second, independent judge. Its
   `ClientVerifier` for clients; for servers a `ServerVerifier` for
   SERVER_NAME (or, without one, for the leaf's first DNS/IP SAN), which is
   also where host names are matched -- never by hand here. (webpki allows
   no EdDSA signatures, which gRPC does: a path signed with Ed25519/Ed448 is
   judged by step 2 alone, and its server name by exact SAN equality.) Two rules of its
   webpki defaults are relaxed because private CAs do not follow them:
   authorityKeyIdentifier may be absent (leaf and CA), and a client leaf may
   lack a subjectAltName (the identity check refuses it later, by name).
4. revocation, for EVERY certificate of the verified chain but the trust
   anchor itself: each is looked up in the CRL of *its issuer's key*
   (`RevocationIndex`, keyed by the SHA-256 of the issuer's
   SubjectPublicKeyInfo), so a revoked intermediate refuses all its leaves,
   and a CRL of another CA with the same name never applies.

Not decided here: whether a CRL is missing, stale or rolled back (that is
a matter of files and history: `tls.revocation`), key file modes, and who
may call what (`identity.AuthzPolicy`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from securechat.tls.names import DnsName, Identity, InvalidName, SpiffeId, dns_name, escape, spiffe_id

MAX_CHAIN_DEPTH = 8
"""Certificates between the leaf and its trust anchor that a path may hold; deeper is refused."""

PrivateKey: TypeAlias = (
    ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
)


class Purpose(str, Enum):
    """What the leaf is for: the extended key usage it must carry."""

    CLIENT = "client"
    SERVER = "server"

    @property
    def eku(self) -> x509.ObjectIdentifier:
        return ExtendedKeyUsageOID.CLIENT_AUTH if self is Purpose.CLIENT else ExtendedKeyUsageOID.SERVER_AUTH

    @property
    def eku_name(self) -> str:
        return "clientAuth" if self is Purpose.CLIENT else "serverAuth"


class Code(str, Enum):
    """Why a certificate, key, chain or CRL is not good: the stable, machine-readable part of a Problem."""

    NOT_PEM_CERTIFICATE = "not-pem-certificate"
    NOT_PEM_KEY = "not-pem-key"
    KEY_ENCRYPTED = "key-encrypted"
    KEY_NOT_ENCRYPTED = "key-not-encrypted"
    WRONG_PASSPHRASE = "wrong-passphrase"  # noqa: S105 (a reason code, not a password)
    KEY_MISMATCH = "key-mismatch"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    LEAF_IS_CA = "leaf-is-ca"
    WRONG_EKU = "wrong-eku"
    KEY_USAGE = "key-usage"
    NOT_A_CA = "not-a-ca"
    UNTRUSTED = "untrusted"
    PATH_LENGTH = "path-length"
    NAME_CONSTRAINTS = "name-constraints"
    CHAIN = "chain"
    REVOKED = "revoked"
    NO_SAN = "no-san"
    SAN_MISMATCH = "san-mismatch"
    SPIFFE_MISMATCH = "spiffe-mismatch"
    NO_IDENTITY = "no-identity"
    BAD_IDENTITY = "bad-identity"
    CRL_UNREADABLE = "crl-unreadable"
    CRL_UNTRUSTED = "crl-untrusted"
    CRL_ROLLBACK = "crl-rollback"


CHAIN_CODES = frozenset({Code.UNTRUSTED, Code.PATH_LENGTH, Code.NAME_CONSTRAINTS, Code.NOT_A_CA, Code.CHAIN})
"""Problems with the path to a trust anchor (as opposed to the leaf itself)."""

Field = Literal["cert", "key", "ca", "crl", "identity"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong: a stable CODE, which input it is about (FIELD), a one-line MESSAGE and a FIX.

    DEPTH is the position in the chain of the certificate it is about: 0 the
    leaf, 1 its issuer, and so on. Everything taken from a certificate is
    escaped in MESSAGE (`names.escape`), so it is safe to log or print.
    Callers with better context (a config file's reissue command) may
    replace FIX; the MESSAGE is the decision's wording and stays.
    """

    code: Code
    field: Field
    message: str
    fix: str = ""
    depth: int = 0


@dataclass(frozen=True)
class Verdict:
    """What `verify_chain` decided: the verified CHAIN (leaf first, trust anchor last) and every PROBLEM."""

    chain: tuple[x509.Certificate, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def of(self, codes: Iterable[Code]) -> tuple[Problem, ...]:
        wanted = frozenset(codes)
        return tuple(p for p in self.problems if p.code in wanted)


# -- small facts ---------------------------------------------------------------


def key_id(cert: x509.Certificate) -> str:
    """SHA-256 of CERT's SubjectPublicKeyInfo (hex): how a CA is recognised -- by its key, never its name."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of CERT's DER encoding (hex)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def is_ca(cert: x509.Certificate) -> bool:
    """True if CERT says basicConstraints CA:TRUE."""
    constraints = basic_constraints(cert)
    return constraints is not None and constraints.ca


def key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def extended_key_usages(cert: x509.Certificate) -> frozenset[x509.ObjectIdentifier]:
    try:
        return frozenset(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return frozenset()


def subject_alternative_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if ISSUER's name is CERT's issuer and ISSUER's key made CERT's signature."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def key_matches(key: object, cert: x509.Certificate) -> bool:
    """True if KEY is the private key of CERT's public key."""
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return bool(public().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


def describe(cert: x509.Certificate) -> str:
    """A certificate named for a message: its subject, escaped."""
    return escape(cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}")


def describe_name(name: x509.Name) -> str:
    """An X.500 name for a message or a log line: RFC 4514, escaped."""
    return escape(name.rfc4514_string())


# -- parsing, as problems ----------------------------------------------------------


def parse_certificates(data: bytes, *, where: str, allow_der: bool = False) -> list[x509.Certificate] | Problem:
    """Every PEM certificate in DATA, in order (or DATA's one DER certificate if ALLOW_DER); a Problem if none."""
    try:
        if allow_der and b"-----BEGIN" not in data:
            return [x509.load_der_x509_certificate(data)]
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        if b"PRIVATE KEY-----" in data:
            return Problem(
                Code.NOT_PEM_CERTIFICATE,
                "cert",
                f"{where} is a private key, not a certificate.",
                "Point it at NAME.pem, not NAME-key.pem.",
            )
        return Problem(
            Code.NOT_PEM_CERTIFICATE,
            "cert",
            f"{where} is not a {'PEM or DER' if allow_der else 'PEM'} certificate.",
            "Point it at a file that starts with -----BEGIN CERTIFICATE-----.",
        )


def parse_private_key(data: bytes, *, where: str, password: bytes | None = None) -> PrivateKey | Problem:
    """The PEM private key in DATA, decrypted with PASSWORD; a Problem if it cannot be read or is of an unused type.

    The fixes are the server's and client's (they need an unencrypted key);
    a caller that takes a passphrase (the CA's key) replaces the fix.
    """
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError:
        if password is None:
            return Problem(
                Code.KEY_ENCRYPTED,
                "key",
                f"{where} is encrypted with a passphrase.",
                "The server and client need an unencrypted key file (mode 0600).",
            )
        return Problem(
            Code.KEY_NOT_ENCRYPTED,
            "key",
            f"{where} is not encrypted, but a passphrase was given.",
            "Drop the passphrase.",
        )
    except (ValueError, UnsupportedAlgorithm):
        if password is not None and b"ENCRYPTED" in data:
            return Problem(
                Code.WRONG_PASSPHRASE,
                "key",
                f"{where} could not be decrypted: wrong passphrase.",
                "Check the passphrase.",
            )
        if b"CERTIFICATE-----" in data:
            return Problem(
                Code.NOT_PEM_KEY, "key", f"{where} is a certificate, not a private key.", "Point it at NAME-key.pem."
            )
        return Problem(
            Code.NOT_PEM_KEY,
            "key",
            f"{where} is not a PEM private key.",
            "Point it at the NAME-key.pem file issued with the certificate.",
        )
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    ):
        return Problem(
            Code.NOT_PEM_KEY,
            "key",
            f"{where} holds a {type(key).__name__}, which TLS here cannot use.",
            "Use an ECDSA, RSA or Ed25519 key.",
        )
    return key


# -- keys and anchors -----------------------------------------------------------


def check_key(
    leaf: x509.Certificate, key: object, *, where: str = "the key", cert_where: str = "the certificate"
) -> Problem | None:
    """A Problem if KEY is not the private key of LEAF."""
    if key_matches(key, leaf):
        return None
    return Problem(
        Code.KEY_MISMATCH,
        "key",
        f"{where} does not match the certificate {cert_where}.",
        "Use the key issued with that certificate, or issue both again.",
    )


def check_possession(
    leaf: x509.Certificate, signature: bytes, message: bytes, *, where: str = "the signature"
) -> Problem | None:
    """A Problem unless SIGNATURE over MESSAGE was made by LEAF's key: proof that the sender holds it.

    The scheme follows the key: ECDSA and RSA (PKCS#1 v1.5) over SHA-256,
    Ed25519 and Ed448 as they are. What MESSAGE must say (a context, a
    time, the request it covers) is the caller's protocol, not decided here.
    """
    public_key = leaf.public_key()
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, message)
        else:
            raise InvalidSignature
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return Problem(
            Code.KEY_MISMATCH,
            "key",
            f"{where} is not a signature by the key of {describe(leaf)} (serial {leaf.serial_number:x}).",
            "Sign with the private key issued with that certificate.",
        )
    return None


def check_anchors(anchors: Sequence[x509.Certificate], *, where: str = "the trust anchors") -> Problem | None:
    """A Problem if a trust anchor is not a CA (a leaf put where the CA belongs)."""
    for anchor in anchors:
        if not is_ca(anchor):
            return Problem(
                Code.NOT_A_CA,
                "ca",
                f"{where} holds a certificate that is not a CA ({describe(anchor)}).",
                "Point it at the CA certificate (ca.pem), not a server or client certificate.",
            )
    return None


# -- the leaf ------------------------------------------------------------------------


def _validity(cert: x509.Certificate, now: dt.datetime, where: str, depth: int) -> list[Problem]:
    if now > cert.not_valid_after_utc:
        days = (now - cert.not_valid_after_utc).days
        return [
            Problem(
                Code.EXPIRED,
                "cert" if depth == 0 else "ca",
                f"{where} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({days} day{'s' if days != 1 else ''} ago).",
                "Renew it ('securechat certs renew NAME') or issue a new one.",
                depth,
            )
        ]
    if now < cert.not_valid_before_utc:
        return [
            Problem(
                Code.NOT_YET_VALID,
                "cert" if depth == 0 else "ca",
                f"{where} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC.",
                "Check this machine's clock, or issue a certificate that is valid now.",
                depth,
            )
        ]
    return []


def check_leaf(
    leaf: x509.Certificate, *, purpose: Purpose, now: dt.datetime | None = None, where: str = "the certificate"
) -> list[Problem]:
    """What is wrong with LEAF itself as a PURPOSE certificate: validity, end entity, EKU, keyUsage."""
    now = now or dt.datetime.now(dt.timezone.utc)
    problems = _validity(leaf, now, where, 0)
    if is_ca(leaf):
        problems.append(
            Problem(
                Code.LEAF_IS_CA,
                "cert",
                f"{where} is a CA certificate (basicConstraints CA:TRUE), not a {purpose.value} certificate.",
                f"Use an end-entity certificate issued by the CA ('securechat certs {purpose.value} NAME').",
            )
        )
    if purpose.eku not in extended_key_usages(leaf):
        problems.append(
            Problem(
                Code.WRONG_EKU,
                "cert",
                f"{where} is not a {purpose.value} certificate (its extended key usage lacks {purpose.eku_name}).",
                f"Issue one with 'securechat certs {purpose.value} NAME'.",
            )
        )
    usage = key_usage(leaf)
    if usage is not None and not usage.digital_signature:
        problems.append(
            Problem(
                Code.KEY_USAGE,
                "cert",
                f"{where} may not sign the TLS handshake (its keyUsage lacks digitalSignature).",
                f"Issue one with 'securechat certs {purpose.value} NAME'.",
            )
        )
    return problems


# -- the path ------------------------------------------------------------------------


def build_path(
    leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]
) -> list[x509.Certificate] | None:
    """A path LEAF .. trust anchor, each certificate signed by the next (name and key), or None.

    A trust anchor is preferred over an intermediate at every step; a
    certificate is not used twice; at most MAX_CHAIN_DEPTH issuers.
    """

    def extend(path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        current = path[-1]
        for anchor in anchors:
            if signed_by(current, anchor):
                return path if current == anchor else [*path, anchor]
        if len(path) > MAX_CHAIN_DEPTH:
            return None
        for candidate in intermediates:
            if candidate not in path and candidate != current and signed_by(current, candidate):
                found = extend([*path, candidate])
                if found is not None:
                    return found
        return None

    if leaf in anchors:
        return [leaf]
    return extend([leaf])


def _ca_problems(path: Sequence[x509.Certificate], now: dt.datetime, where: str) -> list[Problem]:
    problems: list[Problem] = []
    for depth, ca in enumerate(path[1:], start=1):
        name = f"the CA certificate {describe(ca)} in the chain of {where}"
        constraints = basic_constraints(ca)
        if constraints is None or not constraints.ca:
            problems.append(
                Problem(
                    Code.NOT_A_CA,
                    "ca",
                    f"{where} was signed by {describe(ca)}, which is not a CA (no basicConstraints CA:TRUE).",
                    "Issue certificates only from a CA certificate ('securechat certs init').",
                    depth,
                )
            )
            continue
        usage = key_usage(ca)
        if usage is None or not usage.key_cert_sign:
            problems.append(
                Problem(
                    Code.NOT_A_CA,
                    "ca",
                    f"{where} was signed by {describe(ca)}, whose keyUsage does not allow signing certificates (keyCertSign).",
                    "Issue certificates only from a CA certificate with keyUsage keyCertSign ('securechat certs init').",
                    depth,
                )
            )
        problems += _validity(ca, now, name, depth)
        problems += _name_constraint_problems(ca, path[0], depth, where)
        below = depth - 1  # intermediate CAs between this CA and the leaf
        if constraints.path_length is not None and below > constraints.path_length:
            problems.append(
                Problem(
                    Code.PATH_LENGTH,
                    "ca",
                    f"{where} is {below} intermediate CA(s) below {describe(ca)}, whose pathLen {constraints.path_length}"
                    f" allows {constraints.path_length}.",
                    f"Issue the certificate from a CA that may sign it, or issue a new intermediate from {describe(ca)}'s parent.",
                    depth,
                )
            )
    return problems


def _within(name: str, subtree: str) -> bool:
    # RFC 5280 4.2.1.10: a DNS constraint covers the name itself and every name with labels added on the left.
    base = subtree.lower().lstrip(".")
    return name == base or name.endswith("." + base)


def _dns_subtrees(ca: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return [], []
    permitted = [s.value for s in constraints.permitted_subtrees or () if isinstance(s, x509.DNSName)]
    excluded = [s.value for s in constraints.excluded_subtrees or () if isinstance(s, x509.DNSName)]
    return permitted, excluded


def permitted_dns_subtrees(ca: x509.Certificate) -> list[str]:
    """The DNS subtrees CA may certify names under (empty: CA has no DNS name constraint)."""
    return _dns_subtrees(ca)[0]


def outside_name_constraints(ca: x509.Certificate, dns_names: Iterable[str]) -> list[str]:
    """The names among DNS_NAMES (lowercased) that CA's DNS name constraints do not allow.

    Only DNS subtrees are judged here; names of other types are constrained
    only by subtrees of their own type (RFC 5280), which cryptography's
    verifier enforces.
    """
    permitted, excluded = _dns_subtrees(ca)
    if not permitted and not excluded:
        return []
    return [
        name
        for name in (n.lower() for n in dns_names)
        if (permitted and not any(_within(name, p) for p in permitted)) or any(_within(name, e) for e in excluded)
    ]


def _name_constraint_problems(ca: x509.Certificate, leaf: x509.Certificate, depth: int, where: str) -> list[Problem]:
    """The leaf's DNS SANs against CA's DNS name constraints."""
    dns = [san.value for san in subject_alternative_names(leaf) if isinstance(san, x509.DNSName)]
    for name in outside_name_constraints(ca, dns)[:1]:
        return [
            Problem(
                Code.NAME_CONSTRAINTS,
                "ca",
                f"{where} names {escape(name)}, outside the name constraints of {describe(ca)}.",
                "Issue it for a name the CA may certify.",
                depth,
            )
        ]
    return []


_SERVER_EE_POLICY = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None
)
_CLIENT_EE_POLICY = _SERVER_EE_POLICY.may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None
)


def _subject_for(leaf: x509.Certificate, server_name: str | None) -> x509.DNSName | x509.IPAddress | None:
    if server_name is not None:
        try:
            return x509.IPAddress(ipaddress.ip_address(server_name))
        except ValueError:
            return x509.DNSName(server_name)
    for name in subject_alternative_names(leaf):
        if isinstance(name, x509.DNSName | x509.IPAddress):
            return name
    return None


def _judge(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    purpose: Purpose,
    now: dt.datetime,
    subject: x509.DNSName | x509.IPAddress | None,
) -> tuple[tuple[x509.Certificate, ...], str]:
    """cryptography's verdict: (verified chain, '') or ((), its reason)."""
    builder = (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=_CA_POLICY, ee_policy=_CLIENT_EE_POLICY if purpose is Purpose.CLIENT else _SERVER_EE_POLICY
        )
    )
    try:
        if purpose is Purpose.CLIENT:
            return tuple(builder.build_client_verifier().verify(leaf, list(intermediates)).chain), ""
        if subject is None:
            return (), "no subject name to verify"
        return tuple(builder.build_server_verifier(subject).verify(leaf, list(intermediates))), ""
    except VerificationError as exc:
        return (), str(exc)


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    purpose: Purpose,
    now: dt.datetime | None = None,
    crls: RevocationIndex | None = None,
    server_name: str | None = None,
    where: str = "the certificate",
    anchors_where: str = "the trust anchors",
    anchors_field: str = "the trust anchors",
) -> Verdict:
    """Decide whether LEAF, with INTERMEDIATES, chains to one of ANCHORS as a PURPOSE certificate at NOW.

    LEAF is the end-entity certificate; INTERMEDIATES are the other
    certificates its owner presented (a chain file's tail, a TLS peer's
    chain), in any order, possibly including the anchor itself; ANCHORS are
    the trusted CA certificates (a client CA bundle, root.pem). NOW defaults
    to the current time (timezone-aware UTC). CRLS, when given, are checked
    for every certificate of the verified chain but the anchor. SERVER_NAME,
    for PURPOSE SERVER, is the name a client dials: the leaf must cover it
    (DNS or IP SAN, matched by cryptography). WHERE, ANCHORS_WHERE and
    ANCHORS_FIELD only phrase the messages ("certs/alice.pem", "certs/ca.pem",
    "tls.client_ca").

    Returns a Verdict: the verified chain (leaf first, anchor last) when a
    path was verified, else (); and every Problem found, in the order the
    module docstring gives (`ok` when there is none). Never raises for a
    bad certificate.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    problems = check_leaf(leaf, purpose=purpose, now=now, where=where)
    if purpose is Purpose.SERVER and _subject_for(leaf, None) is None:
        problems.append(
            Problem(
                Code.NO_SAN,
                "cert",
                f"{where} has no DNS or IP subjectAltName; TLS clients match the server's name only against those.",
                "Issue it with 'securechat certs server NAME --san HOST'.",
            )
        )
    if not anchors:
        problems.append(
            Problem(
                Code.UNTRUSTED, "ca", f"{anchors_where} holds no CA certificate.", f"Point {anchors_field} at ca.pem."
            )
        )
        return Verdict((), tuple(problems))
    if not problems:
        verified = _verified_quickly(leaf, intermediates, anchors, purpose, now, crls, server_name, where)
        if verified is not None:
            return verified
    path = build_path(leaf, intermediates, anchors)
    if path is None:
        top = next((c for c in reversed(intermediates) if c != leaf), leaf)
        problems.append(
            Problem(
                Code.UNTRUSTED,
                "cert",
                f"{where} was not signed by the CA in {anchors_where}.",
                f"Issue it from that CA, or point {anchors_field} at the CA that signed it ({escape(top.issuer.rfc4514_string())}).",
            )
        )
        return Verdict((), tuple(problems))
    problems += _ca_problems(path, now, where)
    if problems:
        return Verdict((), tuple(problems))
    if not _webpki_signatures(path):
        # cryptography's verifier follows webpki, which allows no EdDSA
        # signatures; gRPC's BoringSSL does. Such a path is judged by
        # securechat's own checks alone (signatures, CA flags, keyUsage,
        # validity, pathLen, DNS name constraints: all done above).
        if server_name is not None and not _covers(leaf, server_name):
            problems.append(_name_mismatch(leaf, server_name, where))
        if crls is not None:
            problems += revocation_problems(path, crls, where=where)
        return Verdict(tuple(path), tuple(problems))
    chain, refusal = _judge(leaf, intermediates, anchors, purpose, now, _subject_for(leaf, None))
    if not chain:
        return Verdict(
            (),
            (
                Problem(
                    Code.CHAIN,
                    "cert",
                    f"{where} does not verify: {escape(refusal)}.",
                    "Check it with 'securechat certs inspect'.",
                ),
            ),
        )
    problems += _name_and_revocation_problems(chain, intermediates, anchors, purpose, now, crls, server_name, where)
    return Verdict(chain, tuple(problems))


def _name_and_revocation_problems(
    chain: tuple[x509.Certificate, ...],
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    purpose: Purpose,
    now: dt.datetime,
    crls: RevocationIndex | None,
    server_name: str | None,
    where: str,
) -> list[Problem]:
    """What is left to judge of CHAIN once cryptography verified it: the name dialled (SERVER_NAME) and the CRLs."""
    problems: list[Problem] = []
    leaf = chain[0]
    if server_name is not None:
        named, _ = _judge(leaf, intermediates, anchors, purpose, now, _subject_for(leaf, server_name))
        if not named:
            problems.append(_name_mismatch(leaf, server_name, where))
    if crls is not None:
        problems += revocation_problems(chain, crls, where=where)
    return problems


def _verified_quickly(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    purpose: Purpose,
    now: dt.datetime,
    crls: RevocationIndex | None,
    server_name: str | None,
    where: str,
) -> Verdict | None:
    """The verdict for a good chain with each signature checked once (by cryptography), or None to explain it.

    The common case -- a new peer's certificate that is fine -- needs no
    path of securechat's own: cryptography's verifier builds and verifies
    one, and securechat's CA checks run on that verified chain. Anything
    else (a refusal, a CA problem, a path cryptography cannot judge) returns
    None, and `verify_chain` takes the explaining path, which finds the same
    problems in the same order as it always has.
    """
    if not _webpki_signatures([leaf, *intermediates]):
        return None
    chain, _ = _judge(leaf, intermediates, anchors, purpose, now, _subject_for(leaf, None))
    if not chain or _ca_problems(chain, now, where):
        return None
    problems = _name_and_revocation_problems(chain, intermediates, anchors, purpose, now, crls, server_name, where)
    return Verdict(chain, tuple(problems))


_EDDSA = frozenset({x509.SignatureAlgorithmOID.ED25519, x509.SignatureAlgorithmOID.ED448})


def _webpki_signatures(path: Sequence[x509.Certificate]) -> bool:
    return not any(cert.signature_algorithm_oid in _EDDSA for cert in path)


def _covers(leaf: x509.Certificate, server_name: str) -> bool:
    """Exact SAN match (no wildcards: securechat issues none) for paths cryptography cannot judge."""
    subject = _subject_for(leaf, server_name)
    if isinstance(subject, x509.IPAddress):
        return subject in subject_alternative_names(leaf)
    wanted = server_name.lower().rstrip(".")
    return any(isinstance(n, x509.DNSName) and n.value.lower() == wanted for n in subject_alternative_names(leaf))


def _name_mismatch(leaf: x509.Certificate, server_name: str, where: str) -> Problem:
    sans = ", ".join(escape(_san_text(n)) for n in subject_alternative_names(leaf)) or "none"
    try:
        ipaddress.ip_address(server_name)
        kind = "an IP SAN"
    except ValueError:
        kind = "a DNS SAN"
    return Problem(
        Code.SAN_MISMATCH,
        "cert",
        f"'{escape(server_name)}' is not among {where}'s names ({sans}); it needs {kind}",
        f"Reissue it with 'securechat certs server NAME --san {escape(server_name)}', or set tls.server_name.",
    )


def _san_text(name: x509.GeneralName) -> str:
    kind = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.UniformResourceIdentifier: "URI", x509.RFC822Name: "email"}
    return f"{kind.get(type(name), type(name).__name__)}:{name.value}"


# -- identities ------------------------------------------------------------------------


@dataclass(frozen=True)
class LeafIdentity:
    """The identities a leaf names: its DNS name (the SAN that equals its CN, else the first DNS SAN) and SPIFFE ID."""

    dns: DnsName
    spiffe: SpiffeId | None


def leaf_identity(leaf: x509.Certificate) -> LeafIdentity | Problem:
    """The identity LEAF names, by the standards' syntax; a Problem if it names none, or an invalid one.

    The CN alone never names anyone: it only picks which DNS SAN is the
    identity when there are several. Only the chosen DNS SAN and the first
    `spiffe://` URI SAN are judged; other SANs are not identities here.
    """
    serial = f"{leaf.serial_number:x}"
    sans = subject_alternative_names(leaf)
    dns_values = [n.value for n in sans if isinstance(n, x509.DNSName)]
    if not dns_values:
        return Problem(
            Code.NO_IDENTITY,
            "identity",
            f"certificate serial {serial} has no DNS subjectAltName naming the client",
            "Issue it with 'securechat certs client NAME'.",
        )
    common_names = [attr.value for attr in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    chosen = next((cn for cn in common_names if cn in dns_values), dns_values[0])
    try:
        dns = dns_name(str(chosen))
    except InvalidName as exc:
        return Problem(
            Code.BAD_IDENTITY,
            "identity",
            f"certificate serial {serial} names no valid identity: {exc}",
            "Issue it with 'securechat certs client NAME'.",
        )
    spiffe = None
    uri = next(
        (
            n.value
            for n in sans
            if isinstance(n, x509.UniformResourceIdentifier) and n.value.lower().startswith("spiffe:")
        ),
        None,
    )
    if uri is not None:
        try:
            spiffe = spiffe_id(uri)
        except InvalidName as exc:
            return Problem(
                Code.BAD_IDENTITY,
                "identity",
                f"certificate serial {serial} has an invalid SPIFFE ID: {exc}",
                "Issue it with a valid spiffe://TRUST-DOMAIN/PATH URI SAN.",
            )
    return LeafIdentity(dns=dns, spiffe=spiffe)


def match_identity(leaf: x509.Certificate, expected: Identity, *, where: str = "the certificate") -> Problem | None:
    """A Problem unless LEAF carries EXPECTED: a SpiffeId only as a URI SAN, a DnsName only as a DNS SAN.

    The kinds never cross: a DNS SAN reading `spiffe://...` is not a SPIFFE ID.
    """
    sans = subject_alternative_names(leaf)
    if isinstance(expected, SpiffeId):
        uris = {n.value for n in sans if isinstance(n, x509.UniformResourceIdentifier)}
        if expected.value in uris:
            return None
        return Problem(
            Code.SPIFFE_MISMATCH,
            "identity",
            f"{where} does not carry the SPIFFE ID {escape(expected)} as a URI SAN (it has {', '.join(sorted(escape(u) for u in uris)) or 'none'}).",
            "Issue it with that SPIFFE ID, or fix the expected ID.",
        )
    names = set()
    for value in (n.value for n in sans if isinstance(n, x509.DNSName)):
        try:
            names.add(dns_name(value))
        except InvalidName:
            continue
    if expected in names:
        return None
    return Problem(
        Code.SAN_MISMATCH,
        "identity",
        f"{where} does not carry the DNS name {escape(expected)} (it has {', '.join(sorted(escape(n) for n in names)) or 'none'}).",
        "Issue it for that name, or fix the expected name.",
    )


# -- revocation -------------------------------------------------------------------


@dataclass(frozen=True)
class RevocationList:
    """A CRL whose signature was verified with its issuer's key: what it revokes, and from whom."""

    issuer: str
    """RFC 4514 name of the signing CA, escaped (for messages)."""
    issuer_key: str
    """`key_id` of the signing CA: what certificates are matched against."""
    number: int
    serials: frozenset[int]
    this_update: dt.datetime
    next_update: dt.datetime | None
    source: str = "the CRL"

    def stale(self, now: dt.datetime | None = None) -> bool:
        """True once past nextUpdate: a newer CRL should exist."""
        return self.next_update is not None and self.next_update < (now or dt.datetime.now(dt.timezone.utc))


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


def _crl_key_hint(crl: x509.CertificateRevocationList) -> bytes | None:
    try:
        return crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def _subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def verify_crl(
    crl: x509.CertificateRevocationList,
    signers: Sequence[x509.Certificate],
    *,
    where: str = "the CRL",
    signers_where: str = "the client CA",
) -> RevocationList | Problem:
    """CRL as a RevocationList if one of SIGNERS signed it, else a Problem.

    The signer is found by KEY: its signature over the CRL must verify with
    that CA's public key (and, where both carry one, the CRL's
    authorityKeyIdentifier must equal the CA's subjectKeyIdentifier). The
    name must match as well, but a name alone never does: during a rollover
    two CAs share one name. The signer must be a CA allowed to sign CRLs
    (keyUsage cRLSign, when it has a keyUsage).
    """
    hint = _crl_key_hint(crl)
    for ca in signers:
        if ca.subject != crl.issuer or not is_ca(ca):
            continue
        ski = _subject_key_id(ca)
        if hint is not None and ski is not None and hint != ski:
            continue
        usage = key_usage(ca)
        if usage is not None and not usage.crl_sign:
            continue
        try:
            if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                continue
        except (TypeError, ValueError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return RevocationList(
            issuer=escape(ca.subject.rfc4514_string()),
            issuer_key=key_id(ca),
            number=crl_number(crl),
            serials=frozenset(entry.serial_number for entry in crl),
            this_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
            source=where,
        )
    return Problem(
        Code.CRL_UNTRUSTED,
        "crl",
        f"{where} is not signed by {signers_where} (its issuer is {escape(crl.issuer.rfc4514_string())}).",
        "Use the crl.pem written by 'securechat certs revoke' in the CA's directory.",
    )


class RevocationIndex:
    """Verified CRLs by their issuer's key: one lookup per certificate of a chain."""

    def __init__(self, lists: Iterable[RevocationList] = ()) -> None:
        by_key: dict[str, RevocationList] = {}
        for item in lists:
            held = by_key.get(item.issuer_key)
            if held is None or item.number > held.number:
                by_key[item.issuer_key] = item
        self._by_key: Mapping[str, RevocationList] = by_key

    @property
    def lists(self) -> tuple[RevocationList, ...]:
        return tuple(self._by_key.values())

    def for_issuer(self, issuer_key: str) -> RevocationList | None:
        return self._by_key.get(issuer_key)

    def revoked(self, issuer_key: str, serial: int) -> RevocationList | None:
        """The CRL of the CA with key ISSUER_KEY if it lists SERIAL, else None."""
        found = self._by_key.get(issuer_key)
        return found if found is not None and serial in found.serials else None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RevocationIndex) and dict(self._by_key) == dict(other._by_key)

    def __hash__(self) -> int:
        return hash(frozenset(self._by_key.items()))

    def __bool__(self) -> bool:
        return bool(self._by_key)


def chain_links(chain: Sequence[x509.Certificate]) -> tuple[tuple[str, int], ...]:
    """(issuer key id, serial) of every certificate of CHAIN but its last (the trust anchor): what revocation looks up."""
    return tuple((key_id(chain[i + 1]), chain[i].serial_number) for i in range(len(chain) - 1))


def revocation_problems(
    chain: Sequence[x509.Certificate], crls: RevocationIndex, *, where: str = "the certificate"
) -> list[Problem]:
    """A Problem for every certificate of CHAIN (leaf first) that the CRL of its issuer's key revokes."""
    problems: list[Problem] = []
    for depth, (issuer_key, serial) in enumerate(chain_links(chain)):
        found = crls.revoked(issuer_key, serial)
        if found is None:
            continue
        problems.append(revoked_problem(found, serial, depth, where=where, cert=chain[depth]))
    return problems


def revoked_problem(
    found: RevocationList, serial: int, depth: int, *, where: str, cert: x509.Certificate | None = None
) -> Problem:
    """The Problem for a certificate (serial SERIAL, DEPTH in its chain) that FOUND revokes."""
    if depth == 0:
        return Problem(
            Code.REVOKED,
            "cert",
            f"{where} (serial {serial:x}) is revoked in {found.source} (CRL number {found.number}).",
            "Ask for a new certificate.",
        )
    name = describe(cert) if cert is not None else f"serial {serial:x}"
    return Problem(
        Code.REVOKED,
        "ca",
        f"the CA certificate {name} (serial {serial:x}) in the chain of {where} is revoked in {found.source}"
        f" (CRL number {found.number}), and with it everything it signed.",
        "Issue new certificates from a CA that is not revoked.",
        depth,
    )
