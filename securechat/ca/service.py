"""The CA service: `securechat.ca.v1.CertificateAuthority` over grpc.aio, `start_ca_server(config)`.

Ports:
- `listen` (TLS, the CA service's own server certificate): Enroll,
  TrustBundle, and Renew with a proof of the current key (RenewRequest
  `current_chain_pem` + `signature`). grpcio can only require a client
  certificate or not ask for one, so a port that serves Enroll (whose
  callers have no certificate yet) cannot also take one in the handshake;
  and a server certificate (serverAuth only) is refused as a TLS client
  certificate anyway, so servers renew this way everywhere.
- `mtls_listen` (optional, mutual TLS against the trust anchors): Renew
  authenticated by the client certificate of the handshake; TrustBundle.

Every refusal ends the call with its status code and the reason in the
`securechat-refusal` trailing metadata, and is one audit line; every
issuance is one audit line after its record is durable.

Fault injection for tests: with SECURECHAT_CA_CRASH_AFTER_COMMIT=1 in its
environment the process exits (code 75) after the first record is
committed and before its reply is sent — the crash the database's
ordering exists for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from securechat import pki
from securechat._gen import ca_pb2, ca_pb2_grpc
from securechat.ca import audit
from securechat.ca.authority import Issuance, OnlineCa
from securechat.ca.metrics import CaMetrics
from securechat.ca.own import OwnCertificate, server_pair
from securechat.ca.policy import MAX_CACHED_VERDICTS
from securechat.ca.refusals import CaRefusal, RefusalReason
from securechat.config.ca import CaConfig, format_duration
from securechat.errors import SecureChatError
from securechat.protocol import REFUSAL_KEY
from securechat.tls import checks

log = logging.getLogger(__name__)

_Request = TypeVar("_Request")
_Context: TypeAlias = "grpc.aio.ServicerContext[_Request, ca_pb2.CertificateReply]"

SERVICE_NAME = "securechat.ca.v1.CertificateAuthority"
CRASH_AFTER_COMMIT_ENV = "SECURECHAT_CA_CRASH_AFTER_COMMIT"
CRASH_EXIT_CODE = 75
MAX_PENDING_CALLS = 20_000
"""Calls gRPC core may hold before the servicer picks them up: a 10,000-client renewal storm fits."""
MAX_QUEUED_SECONDS = 300
"""How long such a call may wait for the servicer before core cancels it (core's default: 30 s)."""


class CaServicer(ca_pb2_grpc.CertificateAuthorityServicer):
    def __init__(self, authority: OnlineCa) -> None:
        self._ca = authority
        self._metrics = authority.metrics
        self._crash_after_commit = os.environ.get(CRASH_AFTER_COMMIT_ENV) == "1"
        self._handshakes = HandshakeChains()
        self._renewed_by_kind: dict[str, Any] = {}

    def _renewed(self, kind: str) -> Any:
        """The renewed counter's child for KIND, looked up once (`labels` takes a lock and builds a key)."""
        child = self._renewed_by_kind.get(kind)
        if child is None:
            child = self._renewed_by_kind[kind] = self._metrics.renewed.labels(kind=kind)
        return child

    async def Enroll(  # noqa: N802
        self, request: ca_pb2.EnrollRequest, context: _Context[ca_pb2.EnrollRequest]
    ) -> ca_pb2.CertificateReply:
        caller = context.peer()
        try:
            job = self._ca.enroll_job(request.token, request.csr_pem, caller=caller)
            issuance: Issuance = await self._ca.db.run_async(job)
        except CaRefusal as refusal:
            await self._refuse(context, refusal, caller)
        self._committed()
        record = issuance.record
        if not issuance.replayed:
            self._metrics.issued.labels(kind=record.kind).inc()
        audit.record(
            "issued",
            identity=record.name,
            serial=record.serial,
            kind=record.kind,
            not_after=record.not_after,
            caller=caller,
            reason="enroll (repeated: the recorded certificate)" if issuance.replayed else "enroll",
        )
        return self._reply(issuance)

    async def Renew(  # noqa: N802
        self, request: ca_pb2.RenewRequest, context: _Context[ca_pb2.RenewRequest]
    ) -> ca_pb2.CertificateReply:
        caller = context.peer()
        try:
            presented, proof, fingerprint = _current_certificate(request, context, self._handshakes)
            issuance = await self._ca.renew(
                request.csr_pem, presented=presented, proof=proof, caller=caller, fingerprint=fingerprint
            )
        except CaRefusal as refusal:
            await self._refuse(context, refusal, caller)
        self._committed()
        record = issuance.record
        self._renewed(record.kind).inc()
        audit.record(
            "renewed",
            identity=record.name,
            serial=record.serial,
            kind=record.kind,
            not_after=record.not_after,
            caller=caller,
            reason=f"renew of {record.renewed_from}",
        )
        return self._reply(issuance)

    async def TrustBundle(  # noqa: N802
        self,
        request: ca_pb2.TrustBundleRequest,
        context: grpc.aio.ServicerContext[ca_pb2.TrustBundleRequest, ca_pb2.TrustBundleReply],
    ) -> ca_pb2.TrustBundleReply:
        return ca_pb2.TrustBundleReply(trust_bundle_pem=self._ca.trust_bundle_pem())

    def _reply(self, issuance: Issuance) -> ca_pb2.CertificateReply:
        return ca_pb2.CertificateReply(
            certificate_chain_pem=issuance.chain_pem,
            trust_bundle_pem=self._ca.trust_bundle_pem(),
            serial=issuance.record.serial,
            not_after=issuance.record.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    def _committed(self) -> None:
        if self._crash_after_commit:
            log.error("%s=1: exiting after the commit, before the reply (fault injection)", CRASH_AFTER_COMMIT_ENV)
            logging.shutdown()
            os._exit(CRASH_EXIT_CODE)

    async def _refuse(self, context: _Context[Any], refusal: CaRefusal, caller: str) -> None:
        self._metrics.refused.labels(reason=refusal.reason.value).inc()
        audit.record(
            "refused", identity=refusal.identity, serial=refusal.serial, caller=caller, reason=refusal.reason.value
        )
        context.set_trailing_metadata(((REFUSAL_KEY, refusal.reason.value),))
        await context.abort(refusal.code, refusal.message)


class HandshakeChains:
    """Handshake certificates as parsed chains with the leaf's fingerprint, parsed once per connection's PEM
    (bounded; a kept connection sends the same certificate with every call)."""

    def __init__(self, size: int = MAX_CACHED_VERDICTS) -> None:
        self.size = size
        self._parsed: OrderedDict[tuple[bytes, bytes], tuple[list[x509.Certificate], bytes]] = OrderedDict()

    def chain(self, leaf_pem: bytes, chain_pem: bytes) -> tuple[list[x509.Certificate], bytes]:
        """The leaf, and what else the peer sent (core lists that chain in its own order); the leaf's SHA-256."""
        key = (leaf_pem, chain_pem)
        found = self._parsed.get(key)
        if found is not None:
            return found
        leaf = checks.parse_certificates(leaf_pem, where="the handshake's client certificate")
        if isinstance(leaf, checks.Problem):
            raise CaRefusal(RefusalReason.NO_CERTIFICATE, leaf.message.rstrip("."))
        sent = checks.parse_certificates(chain_pem, where="the handshake") if chain_pem else []
        chain = [leaf[0], *(c for c in sent if c != leaf[0])] if isinstance(sent, list) else [leaf[0]]
        parsed = self._parsed[key] = (chain, leaf[0].fingerprint(hashes.SHA256()))
        while len(self._parsed) > self.size:
            self._parsed.popitem(last=False)
        return parsed


def _current_certificate(
    request: ca_pb2.RenewRequest, context: _Context[ca_pb2.RenewRequest], handshakes: HandshakeChains
) -> tuple[list[x509.Certificate], tuple[bytes, int] | None, bytes | None]:
    """The caller's current chain: from the mTLS handshake, else from the request with its proof; the
    leaf's fingerprint when already known.

    Either way the chain is judged by the TLS core afterwards
    (`OnlineCa.renew`); the handshake only proved the key.
    """
    auth = context.auth_context()
    handshake = auth.get("x509_pem_cert")
    if handshake:
        chain, fingerprint = handshakes.chain(b"".join(handshake), b"".join(auth.get("x509_pem_cert_chain") or ()))
        return chain, None, fingerprint
    if not request.current_chain_pem:
        raise CaRefusal(
            RefusalReason.NO_CERTIFICATE,
            "Renew needs the current certificate: send current_chain_pem with a signature, or call the mTLS port",
        )
    presented = checks.parse_certificates(request.current_chain_pem, where="current_chain_pem")
    if isinstance(presented, checks.Problem):
        raise CaRefusal(RefusalReason.BAD_PROOF, "current_chain_pem holds no readable PEM certificate")
    if not request.signature:
        raise CaRefusal(RefusalReason.BAD_PROOF, "current_chain_pem came without the signature that proves its key")
    return presented, (request.signature, request.signed_at_unix_ms), None


@dataclass
class RunningCa:
    config: CaConfig
    authority: OnlineCa
    server: grpc.aio.Server
    port: int
    mtls_port: int | None = None
    metrics_port: int | None = None
    own: OwnCertificate | None = None
    """The CA service's own TLS pair, served live and renewed in-process."""
    own_renewal: asyncio.Task[None] | None = None

    async def stop(self, grace: float = 1.0) -> None:
        if self.own_renewal is not None:
            self.own_renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.own_renewal
        await self.server.stop(grace)
        self.authority.metrics.close()
        await asyncio.to_thread(self.authority.close)
        log.info("CA service stopped")


async def start_ca_server(config: CaConfig, *, authority: OnlineCa | None = None) -> RunningCa:
    """Load the CA, open the database, bind the port(s) and start serving; errors before any port opens."""
    if authority is None:
        authority = await asyncio.to_thread(OnlineCa, config, metrics=CaMetrics())
    try:
        own = OwnCertificate(config, authority, server_pair(config, authority.anchors))
    except BaseException:
        await asyncio.to_thread(authority.close)
        raise
    # crl.pem now: a rolled-back or deleted one is published anew before the first renewal
    # (an unusable one is logged by the authority, and refuses renewals until fixed).
    with contextlib.suppress(CaRefusal):
        await asyncio.to_thread(authority.revocations)
    metrics = authority.metrics
    if config.testing_short_lifetimes:
        log.warning(
            "testing_short_lifetimes: true in %s: lifetimes under 5 minutes are allowed (client %s, server %s)."
            " Never in production.",
            config.source.name,
            format_duration(config.lifetimes.client),
            format_duration(config.lifetimes.server),
        )
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            # A fleet renewing together (after a CA outage, say) arrives at once:
            # core's default sheds beyond 1,000 unrequested calls with a bare CANCELLED.
            ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
            # ... and cancels a call still waiting after 30 s (a storm of 10,000
            # at a few hundred renewals a second waits longer than that).
            ("grpc.server_max_unrequested_time_in_server", MAX_QUEUED_SECONDS),
        ]
    )
    ca_pb2_grpc.add_CertificateAuthorityServicer_to_server(CaServicer(authority), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    try:
        # Both ports follow `own`: a renewed certificate is served to the next handshake, live.
        port = _bind(server, str(config.listen), own.credentials("listen"))
        mtls_port = None
        if config.mtls_listen is not None:
            anchors = b"".join(pki.certificate_pem(c) for c in authority.anchors)
            mtls_port = _bind(server, str(config.mtls_listen), own.credentials("mtls_listen", client_roots=anchors))
        await server.start()
    except BaseException:
        await asyncio.to_thread(authority.close)
        raise
    running = RunningCa(config=config, authority=authority, server=server, port=port, mtls_port=mtls_port, own=own)
    running.own_renewal = asyncio.create_task(own.run(), name="securechat-ca-own-certificate")
    log.info(
        "the CA service's own certificate %s (serial %s) renews in-process at about 2/3 of its lifetime (due %s)",
        config.tls_cert.name,
        own.serving_serial,
        f"{own.due_at(own.leaf):%Y-%m-%d %H:%M:%S} UTC",
    )
    if config.metrics_port is not None:
        running.metrics_port = metrics.serve(config.listen.host, config.metrics_port)
        log.info("Prometheus metrics on http://%s:%d/metrics", config.listen.host, running.metrics_port)
    return running


class CaBindError(SecureChatError):
    """The CA service's listen address could not be bound."""


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials) -> int:
    try:
        port = int(server.add_secure_port(address, credentials))
    except RuntimeError as exc:
        raise CaBindError(
            f"cannot listen on {address}: {exc}. Is another process using the port? Pick another with --listen."
        ) from exc
    if port == 0:
        raise CaBindError(
            f"cannot listen on {address}: the address is in use or not available here. Pick another with --listen."
        )
    return port
