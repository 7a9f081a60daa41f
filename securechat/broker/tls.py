"""The TLS client context for the link to NATS: our CA, this replica's certificate.

TLS 1.2 or later, the server certificate verified against our CA only (not
the system store), and its name checked against the URL's host (or
`broker.tls.server_name`) by the `ssl` module -- never by hand. The
NATS server asks for our client certificate (`verify: true` in its
config), so a replica with a certificate from another CA is refused there.
"""

from __future__ import annotations

import ssl

from cryptography import x509

from securechat.config.broker import BrokerConfig
from securechat.errors import ConfigError, InputFileError
from securechat.files import CERTIFICATE_LIMIT, KEY_LIMIT, read_regular_file, require_regular_file
from securechat.tls import checks


def client_context(config: BrokerConfig) -> ssl.SSLContext:
    """An SSLContext for nats-py's `tls=` option; ConfigError names the field of a bad file."""
    tls = config.tls
    if tls is None:
        raise config.error("tls", "missing: the link to NATS is mutual TLS.", "Add tls: {ca, cert, key}.")
    # OpenSSL opens these paths itself: refuse a FIFO or device first (it would block or never end).
    for field, path, limit, what in (
        ("tls.ca", tls.ca, CERTIFICATE_LIMIT, "CA certificate"),
        ("tls.cert", tls.cert, CERTIFICATE_LIMIT, "certificate"),
        ("tls.key", tls.key, KEY_LIMIT, "private key"),
    ):
        try:
            require_regular_file(path, limit=limit, what=what)
        except InputFileError as exc:
            raise config.error(field, f"{path} {exc.problem}", exc.fix) from exc
        except OSError:
            pass  # missing or unreadable: the load below words it
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(tls.ca))
    except FileNotFoundError as exc:
        raise _missing(config, "tls.ca", tls.ca) from exc
    except ssl.SSLError as exc:
        raise config.error(
            "tls.ca",
            f"{tls.ca} holds no usable PEM certificate ({exc.reason or exc}).",
            "Point it at our CA (certs/ca.pem).",
        ) from exc
    try:
        context.load_cert_chain(certfile=str(tls.cert), keyfile=str(tls.key))
    except FileNotFoundError as exc:
        field, path = ("tls.cert", tls.cert) if not tls.cert.exists() else ("tls.key", tls.key)
        raise _missing(config, field, path) from exc
    except ssl.SSLError as exc:
        raise config.error(
            "tls.cert",
            f"{tls.cert} and {tls.key} are not a matching PEM certificate and unencrypted key ({exc.reason or exc}).",
            "Issue a pair with 'securechat certs client NAME' and point tls.cert and tls.key at it.",
        ) from exc
    except OSError as exc:
        raise config.error(
            "tls.key", f"cannot read {tls.key} ({exc.__class__.__name__}).", "Check its permissions."
        ) from exc
    _check_own_certificate(config)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


def _check_own_certificate(config: BrokerConfig) -> None:
    """The decision core's verdict on our certificate as a client leaf; ConfigError for its first problem."""
    assert config.tls is not None
    try:
        data = read_regular_file(config.tls.cert, limit=CERTIFICATE_LIMIT, what="certificate")
        leaf = x509.load_pem_x509_certificates(data)[0]
    except (OSError, ValueError, InputFileError):
        return  # ssl has just loaded it: a file that changed under us is the next load's problem
    problems = checks.check_leaf(leaf, purpose=checks.Purpose.CLIENT, where=str(config.tls.cert))
    if problems:
        raise config.error(
            "tls.cert",
            problems[0].message,
            "Issue a pair with 'securechat certs client NAME' (or peer) and point tls.cert and tls.key at it.",
        )


def _missing(config: BrokerConfig, field: str, path: object) -> ConfigError:
    return config.error(field, f"{path} not found.", "Issue it with 'securechat certs' or fix the path.")
