"""Certificates: the CA, server and client profiles, the certs directory.

    ca.py        create_ca, create_root_ca, issue_intermediate, CertificateAuthority — CA profiles
    issue.py     issue_server_cert, issue_client_cert(s), issue_peer_cert, IssuedCert — leaf profiles;
                 sign_leaf, LeafSigner — a leaf for someone else's public key (the online CA)
    names.py     validate_name, parse_san — the one place names become x509 names
    validity.py  how long certificates live (named limits, capping at the CA, lifetimes)
    keys.py      key types, key generation, key_matches_certificate
    pem.py       load_certificate(s), load_private_key — errors name the file
    inspect.py   summarize -> CertSummary, EKUs, is_signed_by — data, not text
    store.py     CertStore: issue into the certs directory, load the CA (flat, or a root and
                 its intermediate: init_hierarchy, write_intermediate), renew, revoke
    layout.py    CertsLayout: where files live in the certs directory, and their modes
    index.py     IndexEntry, parse_index / render_index — the index.json format
    atomic.py    atomic, no-clobber, umask-proof writes; 0700 directories; replace_files
    policy.py    what renewal and revocation mean for the index (pure decisions)
    workers.py   run_in_forks — bulk issuance on every CPU
    revoke.py    reason codes, build_crl / load_crl — the signed CRL
    expiry.py    judge_expiry — "expires soon" relative to the lifetime and renewal
    export.py    pkcs12_bundle — PKCS#12 for browsers and Java; kubernetes_tls_secret
    secrets.py   read_secret_file — passphrase and password files

Library code here never prints or exits; `securechat.cli.certs` (a package) does.
"""

from __future__ import annotations

from securechat.pki.atomic import ensure_private_directory, replace_files, write_private_file
from securechat.pki.ca import (
    DEFAULT_CA_COMMON_NAME,
    INTERMEDIATE_DEFAULT_DAYS,
    CertificateAuthority,
    create_ca,
    create_root_ca,
    issue_intermediate,
)
from securechat.pki.expiry import ExpiryVerdict, judge_expiry, renew_by
from securechat.pki.export import kubernetes_tls_secret, pkcs12_bundle
from securechat.pki.index import INDEX_VERSION, IndexEntry, parse_index, render_index
from securechat.pki.inspect import (
    CertSummary,
    days_left,
    days_text,
    days_until,
    eku_name,
    extended_key_usages,
    fingerprint_sha256,
    is_ca_certificate,
    is_signed_by,
    subject_alternative_names,
    summarize,
)
from securechat.pki.issue import (
    DEFAULT_SERVER_SANS,
    CertificatePublicKey,
    IssuedCert,
    LeafKind,
    LeafSigner,
    SignedCert,
    issue_client_cert,
    issue_client_certs,
    issue_peer_cert,
    issue_server_cert,
    reissue,
    sign_leaf,
)
from securechat.pki.keys import (
    DEFAULT_KEY_TYPE,
    KEY_TYPES,
    KeyType,
    PrivateKey,
    generate_private_key,
    key_matches_certificate,
    key_type_name,
)
from securechat.pki.layout import CA_KEY_MODE, CERT_MODE, DIR_MODE, KEY_MODE, CertsLayout
from securechat.pki.names import check_name_constraints, parse_san, san_to_text, spiffe_id, validate_name
from securechat.pki.pem import (
    certificate_pem,
    load_certificate,
    load_certificates,
    load_private_key,
    private_key_pem,
)
from securechat.pki.policy import RenewalCheck, normalize_serial, parse_renewal_window, renewal_point
from securechat.pki.revoke import (
    CRL_DEFAULT_DAYS,
    CRL_MAX_DAYS,
    REASONS,
    Revocation,
    RevokedSet,
    build_crl,
    crl_number,
    crl_pem,
    load_crl,
    parse_crl,
    reason_of,
)
from securechat.pki.secrets import is_encrypted_key_file, read_secret_file
from securechat.pki.store import CertStore, WrittenLeaf
from securechat.pki.validity import (
    CA_DEFAULT_DAYS,
    CA_MAX_DAYS,
    CLOCK_SKEW_BACKDATE,
    LEAF_DEFAULT_DAYS,
    LEAF_MAX_DAYS,
    Validity,
    lifetime_window,
    utc_now,
)

__all__ = [
    "CRL_DEFAULT_DAYS",
    "CRL_MAX_DAYS",
    "REASONS",
    "Revocation",
    "RevokedSet",
    "build_crl",
    "check_name_constraints",
    "crl_number",
    "crl_pem",
    "load_crl",
    "parse_crl",
    "pkcs12_bundle",
    "kubernetes_tls_secret",
    "is_encrypted_key_file",
    "read_secret_file",
    "reason_of",
    "reissue",
    "ExpiryVerdict",
    "judge_expiry",
    "renew_by",
    "sign_leaf",
    "LeafSigner",
    "SignedCert",
    "CertificatePublicKey",
    "create_root_ca",
    "issue_intermediate",
    "INTERMEDIATE_DEFAULT_DAYS",
    "Validity",
    "lifetime_window",
    "write_private_file",
    "replace_files",
    "CA_DEFAULT_DAYS",
    "CA_KEY_MODE",
    "CA_MAX_DAYS",
    "CERT_MODE",
    "CLOCK_SKEW_BACKDATE",
    "DEFAULT_CA_COMMON_NAME",
    "DEFAULT_KEY_TYPE",
    "DEFAULT_SERVER_SANS",
    "DIR_MODE",
    "INDEX_VERSION",
    "KEY_MODE",
    "KEY_TYPES",
    "LEAF_DEFAULT_DAYS",
    "LEAF_MAX_DAYS",
    "CertStore",
    "CertsLayout",
    "RenewalCheck",
    "renewal_point",
    "ensure_private_directory",
    "normalize_serial",
    "parse_index",
    "parse_renewal_window",
    "render_index",
    "CertSummary",
    "CertificateAuthority",
    "IndexEntry",
    "IssuedCert",
    "KeyType",
    "LeafKind",
    "PrivateKey",
    "WrittenLeaf",
    "certificate_pem",
    "create_ca",
    "days_left",
    "days_text",
    "days_until",
    "eku_name",
    "extended_key_usages",
    "fingerprint_sha256",
    "generate_private_key",
    "is_ca_certificate",
    "is_signed_by",
    "issue_client_cert",
    "issue_client_certs",
    "issue_peer_cert",
    "issue_server_cert",
    "key_matches_certificate",
    "key_type_name",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "parse_san",
    "private_key_pem",
    "san_to_text",
    "spiffe_id",
    "subject_alternative_names",
    "summarize",
    "utc_now",
    "validate_name",
]
