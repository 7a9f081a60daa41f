"""One line a person can act on for every gRPC failure a client meets."""

from __future__ import annotations

import re

import grpc

from securechat.config import ClientConfig
from securechat.errors import ConnectError
from securechat.material import TlsMaterial
from securechat.protocol import reason_of


def explain_error(error: grpc.aio.AioRpcError, config: ClientConfig, material: TlsMaterial | None) -> ConnectError:
    """Turn a gRPC failure into one line a person can act on; the status and refusal reason ride along as data."""
    explained = _explain(error, config, material)
    explained.code = error.code()
    explained.reason = reason_of(error)
    return explained


def _explain(error: grpc.aio.AioRpcError, config: ClientConfig, material: TlsMaterial | None) -> ConnectError:
    code = error.code()
    details = error.details() or ""
    target = str(config.target)
    source = config.source.name
    cert = config.tls.cert if config.tls and config.tls.cert else "tls.cert"
    inspect_hint = f"Check it with 'securechat certs inspect {cert}'."
    if code is grpc.StatusCode.UNAVAILABLE:
        if "Connection refused" in details or "DNS resolution failed" in details or "No route to host" in details:
            return ConnectError(
                f"server not reachable at {target}: {_last_reason(details)}. Is it running, and is target right in {source}?"
            )
        if "Hostname Verification" in details or "Peer name" in details:
            host = config.tls.server_name if config.tls and config.tls.server_name else config.target.host
            return ConnectError(
                f"server name does not match its certificate: '{host}' is not among the server certificate's names. "
                f"Issue the server certificate with '--san {host}', or set tls.server_name in {source}."
            )
        if "CERTIFICATE_VERIFY_FAILED" in details:
            ca = config.tls.ca if config.tls else "tls.ca"
            return ConnectError(
                f"untrusted server: its certificate was not signed by the CA in {ca} ({_last_reason(details)}). "
                f"Point tls.ca in {source} at the CA that signed the server's certificate."
            )
        if "Socket closed" in details or "Connection reset" in details or "handshake" in details.lower():
            if material is None:
                return ConnectError(
                    f"the server at {target} closed the connection: it probably expects TLS. Remove insecure: true and configure tls in {source}."
                )
            if material.cert_chain is None:
                return ConnectError(
                    f"server refused our connection: it requires a client certificate and {source} sets no tls.cert/tls.key. Add them."
                )
            return ConnectError(
                f"server refused our certificate during the TLS handshake (not signed by its client CA, expired, revoked or not a client certificate). {inspect_hint}"
            )
        if "Deadline" in details or "timeout" in details.lower():
            return ConnectError(f"server not reachable at {target}: timed out.")
        return ConnectError(f"server unavailable at {target}: {_last_reason(details)}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ConnectError(f"server at {target} did not answer in time. Is it running and reachable?")
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return ConnectError(f"server refused our identity: {details}")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return ConnectError(f"server refused the call: {details}. Ask its operator to add us to authz.allow.")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and (too_big := _SERVER_SIZE_LIMIT.search(details)):
        size, limit = too_big.groups()
        return ConnectError(
            f"server refused a {size}-byte message: its limit is {limit} bytes (limits.max_message_bytes in its config)."
            " Send a shorter message, or ask its operator to raise the limit."
        )
    return ConnectError(f"server ended the call: {code.name}: {details}")


# gRPC core's own refusal of an oversized request; the server's code never sees it.
_SERVER_SIZE_LIMIT = re.compile(r"SERVER: Received message larger than max \((\d+) vs\. (\d+)\)")


def _last_reason(details: str) -> str:
    """The innermost reason in a gRPC 'failed to connect to all addresses' text."""
    reason = details.rsplit("last error: ", 1)[-1]
    for marker in ("Failed to connect to remote host: ", "SSL_ERROR_SSL: "):
        if marker in reason:
            reason = reason.split(marker, 1)[1]
    return reason.removesuffix(": OK").strip()
