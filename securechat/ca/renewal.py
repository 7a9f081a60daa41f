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

The trust anchors follow the CA too (`tls.renew.trust_bundle`, on by
default): after each renewal (the reply carries the bundle) and every
TRUST_REFRESH_SECONDS (a `TrustBundle` call), the config's own trust file
(tls.ca for a client, tls.client_ca for a server) is made to hold what the
CA says to trust -- during a root rollover the current root and the next.
What makes that safe against a swapped CA: the bundle is only ever taken
from a connection to the CA service verified against the anchors already
trusted (tls.renew.ca_cert); every anchor in it must be a CA (the TLS core's
`check_anchors`); an anchor that still signs the chain in use (tls.cert's)
is never dropped, whatever the bundle says; and the file is replaced
atomically, only when its set of anchors changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
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
TRUST_REFRESH_SECONDS = 3600.0
"""How often the trust bundle is fetched between renewals (a rollover is announced days ahead)."""


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
        trust_refresh_seconds: float = TRUST_REFRESH_SECONDS,
    ) -> None:
        self.cert_path = Path(cert)
        self.key_path = Path(key)
        self.settings = settings
        self.on_renewed = on_renewed
        self.trust_refresh_seconds = trust_refresh_seconds
        self._trust_due = time.monotonic() + trust_refresh_seconds
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
                if time.monotonic() >= self._trust_due:
                    await self._refresh_trust_logged(None)
                wait = FILE_RECHECK_SECONDS if serial == refused_serial else (due - now).total_seconds()
                wait = min(wait, FILE_RECHECK_SECONDS, max(0.0, self._trust_due - time.monotonic()))
                await asyncio.sleep(max(0.05, wait))
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
        await self._refresh_trust_logged(issued.trust_bundle_pem)
        if self.on_renewed is not None:
            self.on_renewed(renewal)
        return renewal

    # -- the trust bundle ----------------------------------------------------

    async def _refresh_trust_logged(self, bundle_pem: bytes | None) -> None:
        self._trust_due = time.monotonic() + self.trust_refresh_seconds
        try:
            await self.refresh_trust(bundle_pem)
        except SecureChatError as exc:
            log.warning(
                "trust anchors not refreshed from the CA (tried again in %s): %s",
                _seconds(self.trust_refresh_seconds),
                exc,
            )

    async def refresh_trust(self, bundle_pem: bytes | None = None) -> bool:
        """Make tls.renew's trust file hold the CA's trust bundle (fetched when BUNDLE_PEM is None); True if it changed.

        See the module docstring for what keeps this safe. CaError when the
        CA cannot be reached or trusted, PkiError for a bundle that is no set
        of CA certificates or files that cannot be read or written.
        """
        path = self.settings.trust_file
        if path is None or not self.settings.trust_bundle:
            return False
        if bundle_pem is None:
            async with CaClient(self.target()) as client:  # verified against tls.renew.ca_cert: trusted already
                bundle_pem = await client.trust_bundle()
        if not bundle_pem:
            return False
        bundle = checks.parse_certificates(bundle_pem, where="the CA's trust bundle")
        if isinstance(bundle, checks.Problem):
            raise PkiError(f"{bundle.message} Keeping {path} as it is.")
        problem = checks.check_anchors(bundle, where="the CA's trust bundle")
        if problem is not None:
            raise PkiError(f"{problem.message} Keeping {path} as it is.")
        async with _file_lock(path):
            return await asyncio.to_thread(self._write_trust, path, bundle)

    def _write_trust(self, path: Path, bundle: list[x509.Certificate]) -> bool:
        try:
            current = pki.load_certificates(path) if path.exists() else []
            chain = pki.load_certificates(self.cert_path)
        except PkiError as exc:
            raise PkiError(f"{exc} Keeping {path} as it is.") from exc
        wanted, kept = trust_to_write(bundle, current, chain)
        if {c.fingerprint(hashes.SHA256()) for c in wanted} == {c.fingerprint(hashes.SHA256()) for c in current}:
            return False
        pki.replace_files([(path, b"".join(pki.certificate_pem(c) for c in wanted), pki.CERT_MODE)])
        added = [c for c in wanted if c not in current]
        removed = [c for c in current if c not in wanted]
        log.info(
            "trust anchors in %s updated from the CA's trust bundle: %d now%s%s%s",
            path,
            len(wanted),
            f"; added {', '.join(checks.describe(c) for c in added)}" if added else "",
            f"; removed {', '.join(checks.describe(c) for c in removed)}" if removed else "",
            f"; kept {', '.join(checks.describe(c) for c in kept)}, which still signs {self.cert_path.name}'s chain"
            if kept
            else "",
        )
        return True


def trust_to_write(
    bundle: list[x509.Certificate], current: list[x509.Certificate], chain: list[x509.Certificate]
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """What the trust file should hold: BUNDLE, plus each CURRENT anchor that still signs CHAIN (leaf first).

    Returns (what to write, the anchors kept though the bundle left them
    out). Whether an anchor signs the chain is the TLS core's verdict
    (`verify_chain` with that anchor alone, for the leaf's own use).
    """
    kept: list[x509.Certificate] = []
    for anchor in current:
        if anchor in bundle:
            continue
        verdict = checks.verify_chain(
            chain[0],
            chain[1:],
            [anchor],
            purpose=purpose_of(chain[0]),
            where="the certificate in use",
            anchors_where="the current trust file",
            anchors_field="tls.ca",
        )
        if verdict.first is None:
            kept.append(anchor)
    return [*bundle, *kept], kept


def _seconds(value: float) -> str:
    return describe(dt.timedelta(seconds=value))


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
