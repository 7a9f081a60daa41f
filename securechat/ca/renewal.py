"""Renew a certificate on disk from the online CA before it expires, and keep at it while the CA is down.

`Renewer(cert, key, settings).run()` is the loop `securechat serve`, the
clients with `tls.renew`, and `securechat agent` run:

- it reads the certificate on disk each time (so a renewal by someone
  else -- another process, cert-manager, a person -- is simply seen);
- it renews at `renewal_time`: `at` (2/3 by default) of the validity
  window, jittered by up to +-JITTER so a fleet issued together does not
  renew together;
- it makes a new key of the same type, sends the CSR with a proof of the
  current key, checks the answer (the new key's certificate, the same
  name), and replaces key and certificate atomically (key 0600), holding
  a lock file beside the certificate so two renewers never interleave;
- if the CA is unreachable it retries with a jittered, growing delay (at
  most `retry_max_seconds`) and logs each failure with how long the
  certificate has left; once it has expired it says so as an error. A
  refusal (revoked, expired, unknown) is not retried until the files
  change: asking again cannot help.

Whoever uses the files notices the change by content (`tls.watch`): the
server for new handshakes, the client for its next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from securechat import pki
from securechat.ca.client import (
    CaClient,
    CaError,
    CaTarget,
    CredentialFiles,
    Issued,
    presents_client_certificate,
    write_credentials,
)
from securechat.ca.policy import purpose_of
from securechat.config.ca import RenewConfig
from securechat.errors import PkiError, SecureChatError
from securechat.tls import checks

log = logging.getLogger(__name__)

JITTER = 0.05
"""Renewal happens at `at` +- this share of the lifetime, drawn once per certificate."""
FILE_RECHECK_SECONDS = 5.0
"""While waiting, the files are looked at this often: a certificate renewed by someone else moves the next time."""
RETRY_INITIAL_SECONDS = 0.5


def renewal_time(cert: x509.Certificate, *, at: float) -> dt.datetime:
    """When CERT is due: AT (0..1) of the way from notBefore to notAfter."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * at


def remaining(cert: x509.Certificate, now: dt.datetime) -> dt.timedelta:
    return cert.not_valid_after_utc - now


def describe(delta: dt.timedelta) -> str:
    """'3h 20m', '45s', or 'expired 5m ago'."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return f"expired {describe(-delta)} ago"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    return " ".join(parts[:2]) if parts else f"{secs}s"


@dataclass(frozen=True)
class Renewal:
    """One successful renewal: the files written and what is in them now."""

    cert_path: Path
    serial: str
    previous_serial: str
    not_after: dt.datetime


class Renewer:
    """Keeps CERT/KEY renewed from the CA in SETTINGS; see the module docstring."""

    def __init__(
        self,
        *,
        cert: Path,
        key: Path,
        settings: RenewConfig,
        on_renewed: Callable[[Renewal], object] | None = None,
    ) -> None:
        self.cert_path = Path(cert)
        self.key_path = Path(key)
        self.settings = settings
        self.on_renewed = on_renewed
        self.last_error: CaError | None = None
        self.renewals = 0
        self._due_fraction: dict[str, float] = {}

    def target(self) -> CaTarget:
        try:
            trust = self.settings.ca_cert.read_bytes()
        except OSError as exc:
            raise PkiError(f"{self.settings.ca_cert} cannot be read ({exc.strerror}): tls.renew.ca_cert.") from exc
        return CaTarget(str(self.settings.ca), trust, self.settings.server_name)

    def due_at(self, cert: x509.Certificate) -> dt.datetime:
        serial = f"{cert.serial_number:x}"
        if serial not in self._due_fraction:
            self._due_fraction.clear()  # only the current certificate matters
            self._due_fraction[serial] = self.settings.at + random.uniform(-JITTER, JITTER)  # noqa: S311 - jitter
        return renewal_time(cert, at=self._due_fraction[serial])

    # -- the loop ------------------------------------------------------------

    async def run(self) -> None:
        """Renew whenever due, forever (cancel the task to stop)."""
        attempt = 0
        refused_serial: str | None = None
        while True:
            try:
                cert = await asyncio.to_thread(pki.load_certificate, self.cert_path)
            except SecureChatError as exc:
                log.error(
                    "renewal: cannot read %s (%s); looking again in %.0fs", self.cert_path, exc, FILE_RECHECK_SECONDS
                )
                await asyncio.sleep(FILE_RECHECK_SECONDS)
                continue
            serial = f"{cert.serial_number:x}"
            now = dt.datetime.now(dt.timezone.utc)
            due = self.due_at(cert)
            if serial == refused_serial or now < due:
                wait = FILE_RECHECK_SECONDS if serial == refused_serial else (due - now).total_seconds()
                await asyncio.sleep(max(0.05, min(wait, FILE_RECHECK_SECONDS)))
                continue
            try:
                await self.renew_now(expect_serial=serial)
            except CaError as exc:
                self.last_error = exc
                left = remaining(cert, dt.datetime.now(dt.timezone.utc))
                if not exc.retryable:
                    refused_serial = serial
                    log.error(
                        "renewal of %s (serial %s) refused: %s. Not retrying until %s changes; the certificate %s.",
                        _name(cert),
                        serial,
                        exc,
                        self.cert_path,
                        _expiry_text(left, cert),
                    )
                    continue
                delay = min(self.settings.retry_max_seconds, RETRY_INITIAL_SECONDS * 2**attempt)
                delay *= 1.0 - 0.5 * random.random()  # noqa: S311 - jitter, not security
                attempt += 1
                level = logging.ERROR if left <= dt.timedelta(0) else logging.WARNING
                log.log(
                    level,
                    "renewal of %s (serial %s) failed: %s Retrying in %.1fs; the certificate %s.",
                    _name(cert),
                    serial,
                    exc,
                    delay,
                    _expiry_text(left, cert),
                )
                await asyncio.sleep(delay)
                continue
            except SecureChatError as exc:  # our own files: unreadable key, unwritable directory
                log.error("renewal of %s failed: %s. Retrying in %.0fs.", self.cert_path, exc, FILE_RECHECK_SECONDS)
                await asyncio.sleep(FILE_RECHECK_SECONDS)
                continue
            attempt = 0
            refused_serial = None
            self.last_error = None

    # -- one renewal ---------------------------------------------------------

    async def renew_now(self, *, expect_serial: str | None = None) -> Renewal | None:
        """Renew once now; None if EXPECT_SERIAL is no longer on disk (someone else renewed). CaError on failure."""
        async with _file_lock(self.cert_path):
            chain_pem = await asyncio.to_thread(self.cert_path.read_bytes)
            try:
                chain = x509.load_pem_x509_certificates(chain_pem)
            except ValueError as exc:
                raise PkiError(f"{self.cert_path} holds no readable PEM certificate.") from exc
            leaf = chain[0]
            previous = f"{leaf.serial_number:x}"
            if expect_serial is not None and previous != expect_serial:
                return None
            key = await asyncio.to_thread(pki.load_private_key, self.key_path)
            if checks.check_key(leaf, key) is not None:
                raise PkiError(
                    f"{self.key_path} does not match {self.cert_path}; cannot prove the current certificate."
                )
            new_key = await asyncio.to_thread(pki.generate_private_key, pki.key_type_name(leaf.public_key()))
            identity = (chain_pem, pki.private_key_pem(key)) if presents_client_certificate(leaf) else None
            target = self.target()
            async with CaClient(target, identity=identity) as client:
                issued = await client.renew(chain_pem=chain_pem, key=key, new_key=new_key)
            _check_answer(issued, leaf, new_key, target.trust_pem)
            files = CredentialFiles(cert=self.cert_path, key=self.key_path, anchors=None)
            await asyncio.to_thread(write_credentials, files, new_key, issued, force=True)
        renewal = Renewal(self.cert_path, issued.serial, previous, issued.not_after)
        self.renewals += 1
        left = remaining(issued.leaf, dt.datetime.now(dt.timezone.utc))
        log.info(
            "renewed %s: serial %s (was %s), valid until %s (%s)",
            _name(leaf),
            issued.serial,
            previous,
            f"{issued.not_after:%Y-%m-%d %H:%M:%S} UTC",
            describe(left),
        )
        if self.on_renewed is not None:
            self.on_renewed(renewal)
        return renewal


def _check_answer(issued: Issued, old: x509.Certificate, new_key: pki.PrivateKey, trust_pem: bytes) -> None:
    """The CA's answer, judged by the TLS core before it replaces anything: NEW_KEY's certificate, the same
    name and SANs, and a chain that verifies to the anchors in TRUST_PEM (tls.renew.ca_cert) for the same use."""
    chain = checks.parse_certificates(issued.chain_pem, where="the CA's answer")
    if isinstance(chain, checks.Problem):
        raise CaError("the CA returned no readable certificate; keeping the current one.", reason="bad-answer")
    leaf = chain[0]
    if checks.check_key(leaf, new_key) is not None:
        raise CaError("the CA returned a certificate for another key; keeping the current one.", reason="bad-answer")
    if _name(leaf) != _name(old) or set(checks.subject_alternative_names(leaf)) != set(
        checks.subject_alternative_names(old)
    ):
        raise CaError(
            f"the CA returned a certificate for {_name(leaf)!r}, not {_name(old)!r} with the same names;"
            " keeping the current one.",
            reason="bad-answer",
        )
    anchors = checks.parse_certificates(trust_pem, where="tls.renew.ca_cert")
    verdict = checks.verify_chain(
        leaf,
        chain[1:],
        anchors if isinstance(anchors, list) else [],
        purpose=purpose_of(old),
        where="the renewed certificate",
        anchors_where="tls.renew.ca_cert",
        anchors_field="tls.renew.ca_cert",
    )
    if verdict.first is not None:
        raise CaError(
            f"the CA returned a certificate that does not verify: {verdict.first.message} Keeping the current one.",
            reason="bad-answer",
        )


def _name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else f"serial {cert.serial_number:x}"


def _expiry_text(left: dt.timedelta, cert: x509.Certificate) -> str:
    when = f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"
    if left <= dt.timedelta(0):
        return f"EXPIRED at {when}: new connections with it will be refused until it is renewed or enrolled again"
    return f"expires in {describe(left)} (at {when})"


@contextlib.asynccontextmanager
async def _file_lock(cert_path: Path) -> AsyncIterator[None]:
    """An exclusive flock on a lock file beside CERT_PATH, waited for without blocking the loop."""
    lock_path = cert_path.parent / f".{cert_path.name}.renew.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock
