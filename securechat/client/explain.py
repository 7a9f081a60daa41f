"""One line a person can act on for every gRPC failure a client meets."""

from __future__ import annotations

import re

import grpc

from securechat.config import ClientConfig
from securechat.errors import ConnectError
from securechat.protocol import Reason, reason_of
from securechat.tls import checks, failures
from securechat.tls.material import TlsMaterial
from securechat.tls.material import shown as _shown


def explain_error(error: grpc.aio.AioRpcError, config: ClientConfig, material: TlsMaterial | None) -> ConnectError:
    """Turn a gRPC failure into one line a person can act on; the status and refusal reason ride along as data."""
    explained = _explain(error, config, material)
    explained.code = error.code()
    explained.reason = reason_of(error)
    return explained


def _explain(error: grpc.aio.AioRpcError, config: ClientConfig, material: TlsMaterial | None) -> ConnectError:
    code = error.code()
    details = error.details() or ""
    reason = reason_of(error)
    target = str(config.target)
    source = config.source.name
    if code is grpc.StatusCode.UNAVAILABLE and reason is None:
        return _unavailable(details, config, material)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ConnectError(f"server at {target} did not answer in time. Is it running and reachable?")
    if reason is Reason.REVOKED:
        return ConnectError(
            f"server refused our identity: {details}. Ask the CA's operator for a new certificate"
            f" ('securechat certs client NAME --force --dir DIR' where the CA is) and point tls.cert/tls.key in {source} at it."
        )
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return ConnectError(f"server refused our identity: {details}")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        # The server's message names the rule that decided (authz.allow or an authz.methods entry).
        return ConnectError(f"server refused the call: {details}. Ask its operator to add us to that rule.")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and (too_big := _SERVER_SIZE_LIMIT.search(details)):
        size, limit = too_big.groups()
        return ConnectError(
            f"server refused a {size}-byte message: its limit is {limit} bytes (limits.max_message_bytes in its config)."
            " Send a shorter message, or ask its operator to raise the limit."
        )
    if reason is Reason.RATE_LIMITED:
        return ConnectError(f"rate limited: {details}; waiting, then resending")
    if code is grpc.StatusCode.UNAVAILABLE:  # the server answered, with a reason: the broker, a lost feed
        return ConnectError(f"server unavailable at {target}: {details}")
    return ConnectError(f"server ended the call: {code.name}: {details}")


def _unavailable(details: str, config: ClientConfig, material: TlsMaterial | None) -> ConnectError:
    """An UNAVAILABLE without a refusal reason: classified by tls.failures (the one taxonomy), rendered here.

    Where gRPC's words do not tell two failures apart, this looks further:
    the resolver's words for a host that does not resolve, "certificate has
    expired" for the server's own certificate, and, for a bare close, whether
    the port speaks TLS at all (`_speaks_tls`).
    """
    target = str(config.target)
    source = config.source.name
    host = config.target.host
    Failure = failures.TlsFailure  # noqa: N806 - the taxonomy's enum
    failure = failures.from_status(details)
    if failure in (None, Failure.UNREACHABLE) and ("errors resolving" in details or "DNS resolution failed" in details):
        return ConnectError(
            f"cannot resolve '{host}' (target in {source}): no such host."
            " Check its spelling, use an IP address, or add it to DNS or /etc/hosts."
        )
    if failure is Failure.UNREACHABLE:
        return ConnectError(
            f"server not reachable at {target}: {_last_reason(details)}. Is it running, and is target right in {source}?"
        )
    if failure is Failure.NOT_TLS or "HTTP_REQUEST" in details or "PACKET_LENGTH_TOO_LONG" in details:
        return ConnectError(
            f"not a securechat server (or the wrong port): {target} answered without TLS, as a health or metrics port,"
            f" an HTTP server or an insecure: true server does. Point target in {source} at the server's listen address."
        )
    if failure is Failure.SERVER_NAME_MISMATCH:
        name = config.tls.server_name if config.tls and config.tls.server_name else host
        return ConnectError(
            f"server name does not match its certificate: '{name}' is not among the server certificate's names. "
            f"Issue the server certificate with '--san {name}', or set tls.server_name in {source}."
        )
    if failure is Failure.UNTRUSTED_SERVER:
        if "certificate has expired" in details:
            return ConnectError(
                f"the server's certificate has expired (the server at {target}, not ours)."
                " Its operator renews it where its CA is ('securechat certs renew NAME --dir DIR');"
                " a running securechat server picks the new files up by itself."
            )
        if "not yet valid" in details:
            return ConnectError(
                f"the server's certificate at {target} is not valid yet: this machine's clock or the server's is wrong."
                " Check both clocks."
            )
        ca = _shown(config.tls.ca) if config.tls else "tls.ca"
        return ConnectError(
            f"untrusted server: its certificate was not signed by the CA in {ca} ({_last_reason(details)}). "
            f"Point tls.ca in {source} at the CA that signed the server's certificate."
        )
    if failure is Failure.BAD_CERTIFICATE:
        if material is None:
            return ConnectError(
                f"the server at {target} closed the connection: it probably expects TLS. Remove insecure: true and configure tls in {source}."
            )
        if not _speaks_tls(config):
            return ConnectError(
                f"not a securechat server (or the wrong port): {target} closed the connection during the TLS handshake"
                f" before sending a certificate. Point target in {source} at the server's listen address."
            )
        if material.cert_chain is None:
            return ConnectError(
                f"server refused our connection: it requires a client certificate and {source} sets no tls.cert/tls.key. Add them."
            )
        cert = _shown(config.tls.cert) if config.tls and config.tls.cert else "tls.cert"
        return ConnectError(
            "server refused our certificate during the TLS handshake (not signed by its client CA, expired, revoked or"
            f" not a client certificate){_likely_refusal(material)}. Check it with 'securechat certs inspect {cert}',"
            f" or run 'securechat doctor --config {source}'."
        )
    if "Deadline" in details or "timeout" in details.lower():
        return ConnectError(f"server not reachable at {target}: timed out.")
    return ConnectError(f"server unavailable at {target}: {_last_reason(details)}")


def _likely_refusal(material: TlsMaterial) -> str:
    """'; most likely: <reason>' when our own certificate shows why (tls.checks + tls.failures), else ''."""
    cert = material.certificate
    if cert is None:
        return ""
    problems = checks.check_leaf(cert, purpose=checks.Purpose.CLIENT)
    if not problems:
        return ""
    failure = failures.diagnose(failures.Evidence(status_details="Socket closed", local=problems[0]))
    return f"; most likely: {failure.client_view}"


def _speaks_tls(config: ClientConfig, *, timeout: float = 2.0) -> bool:
    """Whether TARGET completes a TLS handshake and shows a certificate: a TLS server, whatever it thinks of ours.

    gRPC reports a server that refused our certificate and one that is not a
    TLS server at all in the same words ("Socket closed"). Under TLS 1.3 a
    server judges the client's certificate after the client's side of the
    handshake is done, so a handshake without a client certificate (and
    without checking the server's: that is not the question) tells them apart.
    """
    import socket
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # noqa: S503 - only asking whether it speaks TLS; nothing is sent
    context.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((config.target.host, config.target.port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=config.target.host) as tls:
                return tls.getpeercert(binary_form=True) is not None
    except (OSError, ssl.SSLError):
        return False


# gRPC core's own refusal of an oversized request; the server's code never sees it.
_SERVER_SIZE_LIMIT = re.compile(r"SERVER: Received message larger than max \((\d+) vs\. (\d+)\)")


def _last_reason(details: str) -> str:
    """The innermost reason in a gRPC 'failed to connect to all addresses' text."""
    reason = details.rsplit("last error: ", 1)[-1]
    for marker in ("Failed to connect to remote host: ", "SSL_ERROR_SSL: "):
        if marker in reason:
            reason = reason.split(marker, 1)[1]
    return reason.removesuffix(": OK").strip()
