"""The TLS client context for the link to NATS: our CA, this replica's certificate.

TLS 1.2 or later, the server certificate verified against our CA only (not
the system store), and its name checked against the URL's host (or
`broker.tls.server_name`) by the `ssl` module -- never by hand. The
NATS server asks for our client certificate (`verify: true` in its
config), so a replica with a certificate from another CA is refused there.

Two judges, like every other TLS peer in securechat: after OpenSSL has
verified the handshake, the chain the NATS server presented goes through
the TLS core (`tls.checks.verify_chain`, purpose server, the dialled name),
on every connect and reconnect. The context's `sslobject_class` (public
`ssl` API, used by asyncio's `start_tls`, which is how nats-py upgrades)
runs it at the end of `do_handshake`; a refusal fails the handshake with
`ssl.SSLCertVerificationError` carrying the core's one-line reason. So
what OpenSSL lets through but securechat's rules do not -- a NATS
certificate without the serverAuth extended key usage, a CA:TRUE leaf, a
pathLen or name-constraint violation -- is refused here as it is for gRPC
peers. The presented intermediates come from `SSLObject.get_unverified_chain()`
where `ssl` has it (Python 3.13+); before that only the leaf is public,
and intermediates must sit in `broker.tls.ca` beside the root.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

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
    context = _CoreCheckedContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname on
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
    context.anchors = _anchors(config)
    context.anchors_where = str(tls.ca)
    context.sslobject_class = _CoreCheckedObject
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    return context


class CoreRefusal(ssl.SSLCertVerificationError):
    """The TLS core refused the NATS server's chain after OpenSSL accepted it; str() is the core's one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.verify_message = message

    def __str__(self) -> str:
        return self.verify_message


class _CoreCheckedContext(ssl.SSLContext):
    """An SSLContext that remembers the trust anchors the TLS core judges the NATS server's chain against."""

    anchors: Sequence[x509.Certificate] = ()
    anchors_where: str = "broker.tls.ca"


class _CoreCheckedObject(ssl.SSLObject):
    """The TLS connection to a NATS server: OpenSSL's handshake, then the TLS core's verdict on the presented chain."""

    def do_handshake(self) -> None:
        super().do_handshake()
        context = self.context
        if isinstance(context, _CoreCheckedContext):
            refusal = judge_server_chain(
                self._presented(),
                context.anchors,
                server_name=self.server_hostname,
                anchors_where=context.anchors_where,
            )
            if refusal is not None:
                raise CoreRefusal(refusal)

    def _presented(self) -> list[x509.Certificate]:
        chain = getattr(ssl.SSLObject, "get_unverified_chain", None)  # public from Python 3.13
        if chain is not None:
            return [_as_certificate(item) for item in chain(self) or ()]
        der = self.getpeercert(binary_form=True)
        return [x509.load_der_x509_certificate(der)] if der else []


def _as_certificate(item: object) -> x509.Certificate:
    if isinstance(item, bytes):
        return x509.load_der_x509_certificate(item)
    return x509.load_pem_x509_certificate(str(item).encode("ascii"))


def judge_server_chain(
    presented: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    server_name: str | None,
    anchors_where: str = "broker.tls.ca",
) -> str | None:
    """The TLS core's verdict on a NATS server's presented chain (leaf first): None when good, else one line why not."""
    if not presented:
        return "the NATS server presented no certificate."
    leaf = presented[0]
    verdict = checks.verify_chain(
        leaf,
        list(presented[1:]),
        anchors,
        purpose=checks.Purpose.SERVER,
        server_name=server_name,
        where=f"the NATS server's certificate ({checks.describe(leaf)})",
        anchors_where=anchors_where,
        anchors_field="broker.tls.ca",
    )
    problem = verdict.first
    if problem is None:
        return None
    return f"{problem.message} {problem.fix}".strip()


def _anchors(config: BrokerConfig) -> list[x509.Certificate]:
    """The certificates in broker.tls.ca (ssl has just loaded them: a parse problem was reported there)."""
    assert config.tls is not None
    try:
        data = read_regular_file(config.tls.ca, limit=CERTIFICATE_LIMIT, what="CA certificate")
        return x509.load_pem_x509_certificates(data)
    except (OSError, ValueError, InputFileError) as exc:
        raise config.error(
            "tls.ca", f"cannot read {config.tls.ca} ({exc}).", "Point it at our CA (certs/ca.pem)."
        ) from exc


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
