"""The CA service's own TLS certificate: served live on every port, renewed in-process before it runs out.

The CA service serves TLS with a server certificate from the CA it runs
(`tls.cert` / `tls.key` in ca.yaml). Like `securechat serve` with
`tls.renew`, it renews that certificate at about 2/3 of its lifetime
(jittered by +-`renewal.JITTER`), but needs no network call to do it: it
makes a new key, asks its own `OnlineCa.renew_own` (the same checks by the
TLS core and the same record as any Renew, with the lifetime ca.yaml gives
servers), writes key (0600) and chain atomically under the same lock file
as `Renewer`, and hands the new pair to gRPC core, which uses it for the
next handshake on each port (`dynamic_ssl_server_credentials`); open
connections keep theirs.

The files are also followed: when someone else replaces them (`securechat
certs renew ca-service`, a Secret swap), the new pair is judged like at
start (`server_pair`) and served; a bad one is refused with the reason,
and the current one stays.

If renewing fails it is retried with a growing delay while the certificate
has time left (each failure logged with that time); a refusal (the
certificate revoked, say) is logged as an error and not retried until the
files change.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import threading

import grpc
from cryptography import x509

from securechat import pki
from securechat.ca import audit
from securechat.ca.authority import OnlineCa
from securechat.ca.client import CredentialFiles, Issued, make_csr, write_credentials
from securechat.ca.refusals import CaRefusal, RefusalReason
from securechat.ca.renewal import FILE_RECHECK_SECONDS, JITTER, _expiry_text, _file_lock, describe, renewal_time
from securechat.config.ca import CaConfig
from securechat.config.renew import DEFAULT_RENEW_AT
from securechat.errors import ConfigError, PkiError, SecureChatError
from securechat.tls import checks
from securechat.tls.credentials import dynamic_server_credentials

log = logging.getLogger(__name__)

RETRY_INITIAL_SECONDS = 0.5
RETRY_MAX_SECONDS = 60.0


def server_pair(config: CaConfig, anchors: list[x509.Certificate]) -> tuple[bytes, bytes]:
    """The CA service's own key and chain (PEM), judged by the TLS core as a server certificate under ANCHORS."""
    source = config.source.name
    fix = "Issue one with 'securechat certs server ca-service --dir certs'."
    try:
        chain = pki.load_certificates(config.tls_cert)
        key = pki.load_private_key(config.tls_key)
    except PkiError as exc:
        raise ConfigError(source, "tls", str(exc), fix) from exc
    leaf = chain[0]
    mismatch = checks.check_key(leaf, key, where=str(config.tls_key), cert_where=str(config.tls_cert))
    if mismatch is not None:
        raise ConfigError(source, "tls.key", mismatch.message, "Use the key issued with it.")
    verdict = checks.verify_chain(
        leaf,
        chain[1:],
        anchors,
        purpose=checks.Purpose.SERVER,
        where=str(config.tls_cert),
        anchors_where="the CA's trust anchors",
        anchors_field="certs",
    )
    if verdict.first is not None:
        renew = "Renew it with 'securechat certs renew ca-service'."
        raise ConfigError(
            source, "tls.cert", verdict.first.message, renew if verdict.first.code is checks.Code.EXPIRED else fix
        )
    # The bytes as they are on disk: what the file watch compares with.
    return config.tls_key.read_bytes(), config.tls_cert.read_bytes()


class OwnCertificate:
    """The pair every port of the CA service serves, and the loop that keeps it renewed (`run`)."""

    def __init__(self, config: CaConfig, authority: OnlineCa, pair: tuple[bytes, bytes]) -> None:
        self.config = config
        self.authority = authority
        self._pair = pair
        self._ports: dict[str, bytes | None] = {}
        self._pending: dict[str, grpc.ServerCertificateConfiguration] = {}
        self._lock = threading.Lock()  # gRPC core calls the fetchers on its own threads
        self._due_fraction: tuple[int, float] | None = None
        self.renewals = 0
        self.last_error: str | None = None

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self._pair[1])[0]

    @property
    def serving_serial(self) -> str:
        return f"{self.leaf.serial_number:x}"

    def credentials(self, port: str, *, client_roots: bytes | None = None) -> grpc.ServerCredentials:
        """Credentials for PORT (a name) that follow this pair; CLIENT_ROOTS makes them require a client certificate."""
        self._ports[port] = client_roots
        initial = grpc.ssl_server_certificate_configuration([self._pair], root_certificates=client_roots)

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            with self._lock:
                return self._pending.pop(port, None)

        return dynamic_server_credentials(initial, fetch, mtls=client_roots is not None)

    def switch(self, pair: tuple[bytes, bytes]) -> None:
        """Serve PAIR (key PEM, chain PEM) to every port's next handshake."""
        with self._lock:
            self._pair = pair
            for port, roots in self._ports.items():
                self._pending[port] = grpc.ssl_server_certificate_configuration([pair], root_certificates=roots)

    def due_at(self, leaf: x509.Certificate) -> dt.datetime:
        if self._due_fraction is None or self._due_fraction[0] != leaf.serial_number:
            self._due_fraction = (leaf.serial_number, DEFAULT_RENEW_AT + random.uniform(-JITTER, JITTER))  # noqa: S311
        return renewal_time(leaf, at=self._due_fraction[1])

    # -- the loop ------------------------------------------------------------

    async def run(self) -> None:
        """Follow the files and renew when due, forever (cancel the task to stop)."""
        attempt = 0
        refused_serial: str | None = None
        while True:
            await self._follow_files()
            leaf = self.leaf
            serial = f"{leaf.serial_number:x}"
            now = dt.datetime.now(dt.timezone.utc)
            due = self.due_at(leaf)
            if serial == refused_serial or now < due:
                wait = FILE_RECHECK_SECONDS if serial == refused_serial else (due - now).total_seconds()
                await asyncio.sleep(max(0.05, min(wait, FILE_RECHECK_SECONDS)))
                continue
            try:
                await self.renew_now()
            except (CaRefusal, SecureChatError) as exc:
                why = exc.message if isinstance(exc, CaRefusal) else str(exc)
                self.last_error = why
                left = leaf.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
                retryable = not isinstance(exc, CaRefusal) or exc.reason is RefusalReason.CA_UNAVAILABLE
                if not retryable:
                    refused_serial = serial
                    log.error(
                        "the CA service's own certificate %s (serial %s) cannot renew: %s. Not retrying until %s"
                        " changes; the certificate %s.",
                        self.config.tls_cert.name,
                        serial,
                        why,
                        self.config.tls_cert,
                        _expiry_text(left, leaf),
                    )
                    continue
                delay = min(RETRY_MAX_SECONDS, RETRY_INITIAL_SECONDS * 2**attempt)
                delay *= 1.0 - 0.5 * random.random()  # noqa: S311 - jitter, not security
                attempt += 1
                log.log(
                    logging.ERROR if left <= dt.timedelta(0) else logging.WARNING,
                    "renewing the CA service's own certificate %s (serial %s) failed: %s. Retrying in %.1fs;"
                    " the certificate %s.",
                    self.config.tls_cert.name,
                    serial,
                    why,
                    delay,
                    _expiry_text(left, leaf),
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            refused_serial = None
            self.last_error = None

    async def _follow_files(self) -> None:
        """Serve what is in tls.cert / tls.key now, if someone replaced them and the core accepts the new pair."""
        try:
            on_disk = await asyncio.to_thread(self.config.tls_cert.read_bytes)
        except OSError:
            return  # mid-replace, or gone: keep serving, look again
        if on_disk == self._pair[1]:
            return
        try:
            pair = await asyncio.to_thread(server_pair, self.config, self.authority.anchors)
        except SecureChatError as exc:
            if self.last_error != str(exc):
                self.last_error = str(exc)
                log.error(
                    "new TLS files of the CA service refused, still serving serial %s: %s", self.serving_serial, exc
                )
            return
        old = self.serving_serial
        self.switch(pair)
        log.info(
            "the CA service's TLS files changed: new handshakes get serial %s (was %s); open connections continue",
            self.serving_serial,
            old,
        )

    async def renew_now(self) -> str:
        """Renew the pair on disk now and serve the new one; its serial. CaRefusal or SecureChatError on failure."""
        cert_path, key_path = self.config.tls_cert, self.config.tls_key
        async with _file_lock(cert_path):
            chain = await asyncio.to_thread(pki.load_certificates, cert_path)
            key = await asyncio.to_thread(pki.load_private_key, key_path)
            leaf = chain[0]
            if checks.check_key(leaf, key) is not None:
                raise PkiError(f"{key_path} does not match {cert_path}; cannot renew the CA service's certificate.")
            new_key = await asyncio.to_thread(pki.generate_private_key, pki.key_type_name(leaf.public_key()))
            csr_pem = make_csr(new_key, _common_name(leaf))
            issuance = await self.authority.renew_own(csr_pem, presented=chain)
            record = issuance.record
            issued = Issued(issuance.chain_pem, b"", record.serial, record.not_after)
            files = CredentialFiles(cert=cert_path, key=key_path, anchors=None)
            await asyncio.to_thread(write_credentials, files, new_key, issued, force=True)
        previous = f"{leaf.serial_number:x}"
        self.switch((pki.private_key_pem(new_key), issuance.chain_pem))
        self.renewals += 1
        self.authority.metrics.renewed.labels(kind=record.kind).inc()
        audit.record(
            "renewed",
            identity=record.name,
            serial=record.serial,
            kind=record.kind,
            not_after=record.not_after,
            caller="self",
            reason=f"the CA service's own certificate, renew of {previous}",
        )
        log.info(
            "renewed the CA service's own certificate %s: serial %s (was %s), valid until %s (%s); new handshakes"
            " get it, open connections keep theirs",
            cert_path.name,
            record.serial,
            previous,
            f"{record.not_after:%Y-%m-%d %H:%M:%S} UTC",
            describe(record.not_after - dt.datetime.now(dt.timezone.utc)),
        )
        return record.serial


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""
