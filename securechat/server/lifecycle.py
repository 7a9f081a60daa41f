"""What changes while the server runs: certificates, the CRL, authorization.

`ServerLifecycle` owns the parts of a running server that can change
without a restart, and one background task that polls for changes every
POLL_SECONDS (or at once on SIGHUP):

- TLS files (tls.cert, tls.key, tls.client_ca): loaded and checked with
  `load_server_material` in a worker thread, then handed to gRPC as one
  ready `ServerCertificateConfiguration`. gRPC's fetcher (`fetch`) runs on a
  core thread before each handshake and only swaps a reference under a
  lock. A key that does not match its certificate, an expired certificate
  or one the client CA did not sign is logged and ignored: the running pair
  stays in force. Open connections and streams keep their TLS session.
- The CRL (`crl:`, default crl.pem next to tls.client_ca; one file may hold
  several PEM CRLs, one per CA): each CRL is accepted only if a CA in the
  client CA bundle or in the server's own certificate chain signed it -- by
  key, never by name alone (`tls.checks.verify_crl`) -- and only if its CRL
  number is not lower than the highest already seen from that CA key, a
  mark kept across restarts (`tls.revocation.CrlHighWater`): an older CRL
  would un-revoke. Revocation applies to every certificate of a caller's
  chain (a revoked intermediate refuses all its leaves). Fail closed: at
  start, a configured CRL that is missing, and any CRL that is unreadable,
  not a regular file (a FIFO is never opened for a blocking read), unsigned
  or rolled back stops the server; a missing default crl.pem stops it too
  when a CRL was seen before or index.json next to it records a
  revocation. While running, a bad or vanished CRL is logged at ERROR and
  the last good one stays in force. A CRL past its nextUpdate is logged at
  WARNING at start, when accepted, and hourly while it stays stale. New
  calls from a revoked certificate get UNAUTHENTICATED; its open Chat
  streams are ended at once.
- Callers' certificates: `identify` decides about each distinct
  certificate and chain once (`tls.identity.PeerVerifier`, rebuilt when the
  client CA changes).
- The config file (authz.allow, authz.methods, crl, tls paths): re-read when
  it changes or on SIGHUP; a broken config is logged and the running one
  kept. Streams whose caller is no longer allowed are ended with
  PERMISSION_DENIED; allowed streams continue. Settings that need a restart
  (limits, ports, log, grace, mtls) are named in a warning.

What is *not* done: OCSP, delta CRLs, and re-binding the listen address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509

from securechat.config import ServerConfig, crl_location, load_server_config
from securechat.errors import ConfigError, SecureChatError
from securechat.files import CONFIG_LIMIT
from securechat.protocol import Reason, Refusal
from securechat.server.service import SERVICE_NAME, ChatService
from securechat.tls import checks
from securechat.tls.checks import Problem, RevocationIndex
from securechat.tls.credentials import dynamic_server_credentials, server_certificate_configuration
from securechat.tls.identity import AuthzPolicy, PeerIdentity, PeerVerifier
from securechat.tls.material import TlsMaterial, load_server_material
from securechat.tls.revocation import CrlFileError, CrlHighWater, load_crls, read_crl_file
from securechat.tls.watch import FileWatch

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
"""How often files are looked at: a revocation or rotation is seen within this."""
RELOAD_SECONDS = 10.0
"""How long one source (config, TLS files, CRL) may take to be looked at before the poll goes on without it."""
MAX_CONFIG_BYTES = CONFIG_LIMIT
"""A config file bigger than this is not reloaded (a server.yaml is a few hundred bytes); the config reader enforces it."""
CHAT_METHOD = f"/{SERVICE_NAME}/Chat"
RESTART_FIELDS = ("insecure", "limits", "health_port", "log_level", "log_format", "grace_seconds")
STALE_REMINDER_SECONDS = 3600.0
"""How often a CRL that stays past its nextUpdate is logged again."""


def load_revocations(
    config: ServerConfig, material: TlsMaterial | None, *, high_water: CrlHighWater | None = None
) -> RevocationIndex | None:
    """The verified CRLs the config points at; None when the default one is absent and nothing says it should exist.

    Raises ConfigError (fail closed) when `crl:` names a missing file; when
    a CRL file is unreadable, not a regular file, not signed by a CA we
    trust, or older than one already seen (HIGH_WATER); and when the default
    crl.pem is missing although a CRL was seen before or index.json records
    a revocation.
    """
    path, explicit = crl_location(config)
    if path is None:
        return None
    field_name = "crl" if explicit else "tls.client_ca"
    source = config.source.name
    try:
        data = read_crl_file(path)
    except CrlFileError as exc:
        if not exc.missing:
            raise ConfigError(source, field_name, exc.problem.message, exc.problem.fix, code=exc.problem.code) from None
        if explicit:
            raise ConfigError(
                source, "crl", f"{path} not found.", "Write it with 'securechat certs revoke NAME', or remove crl."
            ) from None
        reason = _why_a_crl_is_expected(path, high_water)
        if reason is None:
            return None
        raise ConfigError(
            source,
            "tls.client_ca",
            f"{path} not found, but {reason}: without it revoked certificates would be accepted.",
            "Restore crl.pem, or sign it again with 'securechat certs crl' in the CA's directory.",
            code=checks.Code.CRL_UNREADABLE.value,
        ) from None
    lists = load_crls(data, crl_signers(material), where=str(path))
    if isinstance(lists, Problem):
        raise ConfigError(source, field_name, lists.message, lists.fix, code=lists.code)
    if high_water is not None:
        rollback = high_water.rollback(lists)
        if rollback is not None:
            raise ConfigError(source, field_name, rollback.message, rollback.fix, code=rollback.code)
    return RevocationIndex(lists)


def _why_a_crl_is_expected(path: Path, high_water: CrlHighWater | None) -> str | None:
    """Why a missing default crl.pem is suspicious, or None when it simply was never written."""
    if high_water is not None and high_water.issuers:
        seen = max(high_water.issuers.values(), key=lambda s: s.number)
        return f"CRL number {seen.number} of {seen.issuer} was loaded before (recorded in {high_water.path})"
    revoked = _revoked_in_index(path.parent / "index.json")
    if revoked:
        return f"{path.parent / 'index.json'} records {revoked} revoked certificate(s)"
    return None


def _revoked_in_index(index: Path) -> int:
    """How many entries of a certs directory's index.json (format version 1) say "revoked"; 0 if unreadable."""
    try:
        if not index.is_file() or index.stat().st_size > 64 * 1024 * 1024:
            return 0
        data = json.loads(index.read_text(encoding="utf-8"))
        entries = data.get("certificates", []) if isinstance(data, dict) else []
        return sum(1 for e in entries if isinstance(e, dict) and e.get("status") == "revoked")
    except (OSError, ValueError, RecursionError):
        return 0


def client_cas(material: TlsMaterial | None) -> list[x509.Certificate]:
    if material is None or material.ca_bundle is None:
        return []
    return x509.load_pem_x509_certificates(material.ca_bundle)


def crl_signers(material: TlsMaterial | None) -> list[x509.Certificate]:
    """Who may sign our CRLs: the client CA bundle and the CAs in the server's own chain (an issuing intermediate)."""
    signers = client_cas(material)
    if material is not None and material.cert_chain is not None:
        signers += [c for c in x509.load_pem_x509_certificates(material.cert_chain)[1:] if checks.is_ca(c)]
    return signers


@dataclass
class _Changes:
    """What one poll found, computed in a worker thread and applied on the event loop."""

    config: ServerConfig | None = None
    material: TlsMaterial | None = None
    revoked: RevocationIndex | None = None
    errors: list[str] = field(default_factory=list)


class ServerLifecycle:
    """Live TLS material, CRL and authz policy of one server, and the task that keeps them current."""

    def __init__(self, config: ServerConfig, material: TlsMaterial | None) -> None:
        self.config = config
        self._material = material
        self._mtls = config.tls is not None and config.tls.mtls
        self._policy = AuthzPolicy(config.allow, dict(config.authz_methods))
        self._verifier = PeerVerifier(client_cas(material))
        crl_path = crl_location(config)[0]
        self._high_water = CrlHighWater.for_crl(crl_path) if crl_path is not None else None
        self._high_water_crl = crl_path  # the CRL path _high_water belongs to
        self._revoked = load_revocations(config, material, high_water=self._high_water)
        self._stale_logged_at: float | None = None
        self._record_crls(self._revoked)
        self._log_crls_at_start(crl_path)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()
        self._service: ChatService | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._config_watch = FileWatch([config.source])
        self._tls_watch = FileWatch(_tls_paths(config))
        self._crl_watch = FileWatch([crl_location(config)[0]])
        self._inflight: dict[str, asyncio.Future[_Changes]] = {}
        self._stale: set[str] = set()  # sources whose last look was dropped: look again
        self._retarget = False  # the config changed: point the TLS and CRL watches at its paths
        self._crl_recheck = False  # new TLS material (client CA): check the CRL against it

    # -- what the server asks ------------------------------------------------

    def credentials(self) -> grpc.ServerCredentials:
        assert self._material is not None
        initial = server_certificate_configuration(self._material, mtls=self._mtls)
        return dynamic_server_credentials(initial, self.fetch, mtls=self._mtls)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's certificate fetcher: runs on a core thread, so it only hands over what is ready."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def identify(self, pem: bytes, chain_pem: bytes | None) -> PeerIdentity:
        """The caller's identity, decided once per certificate and chain (PeerRejected if refused)."""
        return self._verifier.identify(pem, chain_pem)

    def refusal(self, peer: PeerIdentity, method: str) -> Refusal | None:
        """Why PEER may not call METHOD now (revoked, anywhere in its chain; expired; not allowed), or None."""
        revoked = self._revoked
        if revoked:
            for depth, (issuer_key, serial) in enumerate(peer.links):
                found = revoked.revoked(issuer_key, serial)
                if found is None:
                    continue
                if depth == 0:
                    message = f"certificate serial {peer.serial} ({peer.name}) is revoked"
                else:
                    message = (
                        f"certificate serial {peer.serial} ({peer.name}) is refused: the CA certificate serial {serial:x}"
                        f" in its chain is revoked by {found.issuer}"
                    )
                return Refusal(grpc.StatusCode.UNAUTHENTICATED, Reason.REVOKED, message)
        if time.time() >= peer.valid_until:
            return Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                Reason.BAD_CERTIFICATE,
                f"certificate serial {peer.serial} ({peer.name}) has expired",
            )
        if not self._policy.permits(peer, method):
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                Reason.NOT_ALLOWED,
                f"identity '{peer.name}' is not allowed to call {method} by {self._policy.rule_for(method)}",
            )
        return None

    @property
    def serving_serial(self) -> str | None:
        cert = self._material.certificate if self._material is not None else None
        return f"{cert.serial_number:x}" if cert is not None else None

    # -- running -------------------------------------------------------------

    def start(self, service: ChatService) -> None:
        """Begin polling; SERVICE is where open streams are ended."""
        self._service = service
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="securechat-lifecycle")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def request_reload(self) -> None:
        """SIGHUP: re-read the config, the certificates and the CRL now."""
        log.info("SIGHUP received: reloading %s, certificates and CRL", self.config.source.name)
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            forced = self._wake.is_set()
            self._wake.clear()
            try:
                await self._poll(forced)
            except Exception:  # a poll must never stop polling
                log.exception("checking for changed certificates failed; will retry")

    # -- one poll: each source in its own worker thread, results applied on the event loop

    async def _poll(self, forced: bool) -> None:
        """Look at the config, the TLS files and the CRL, each independently and for at most RELOAD_SECONDS.

        A source whose look is still running (a FIFO at its path, a hung
        network mount, a config that takes long to parse) is not looked at
        again until that look ends, and never holds up the others: an authz
        edit is applied while the CRL read hangs. Its late result is
        dropped and the source is looked at afresh.
        """
        if self._retarget and self._inflight.keys().isdisjoint(("tls", "crl")):
            self._tls_watch.retarget(_tls_paths(self.config))
            crl_path = crl_location(self.config)[0]
            self._crl_watch.retarget([crl_path])
            if crl_path != self._high_water_crl:
                self._high_water = CrlHighWater.for_crl(crl_path) if crl_path is not None else None
                self._high_water_crl = crl_path
            self._retarget = False
        jobs = {"config": self._look_config, "tls": self._look_tls, "crl": self._look_crl}
        started: dict[str, asyncio.Future[_Changes]] = {}
        for source, look in jobs.items():
            running = self._inflight.get(source)
            if running is not None:
                if not running.done():
                    continue
                del self._inflight[source]
                self._stale.add(source)
            again = forced or source in self._stale or (source == "crl" and self._crl_recheck)
            started[source] = self._inflight[source] = asyncio.ensure_future(asyncio.to_thread(look, again))
        if not started:
            return
        done, late = await asyncio.wait(started.values(), timeout=RELOAD_SECONDS)
        for source, future in started.items():
            if future in late:
                log.error(
                    "reloading %s has taken more than %.0f s (%s); what is in force stays, the other reloads go on,"
                    " and it is tried again once this read returns",
                    source,
                    RELOAD_SECONDS,
                    self._describe(source),
                )
                continue
            del self._inflight[source]
            self._stale.discard(source)
            if source == "crl":
                self._crl_recheck = False
            self._apply(future.result())

    def _describe(self, source: str) -> str:
        paths: dict[str, list[Path | None]] = {
            "config": [self.config.source],
            "tls": list(_tls_paths(self.config)),
            "crl": [crl_location(self.config)[0]],
        }
        named = ", ".join(str(path) for path in paths[source] if path is not None)
        return f"{named}: a FIFO, a hung mount, or a file too big or too nested to parse?"

    def _look_config(self, forced: bool) -> _Changes:
        changes = _Changes()
        if not (self._config_watch.changed() or forced):
            return changes
        # The one bounded reader: size (MAX_CONFIG_BYTES), regular files only, nesting depth, alias expansion.
        try:
            changes.config = load_server_config(self.config.source, listen=str(self.config.listen))
        except SecureChatError as exc:
            # One log line whatever the error holds: a ConfigError lists every problem.
            problems = "; ".join(str(exc).splitlines())
            changes.errors.append(f"config reload refused, the running config stays: {problems}")
        return changes

    def _look_tls(self, forced: bool) -> _Changes:
        changes = _Changes()
        config = self.config
        if config.tls is not None and (self._tls_watch.changed() or forced):
            try:
                changes.material = load_server_material(config)
            except SecureChatError as exc:
                changes.errors.append(f"new TLS files rejected, still serving serial {self.serving_serial}: {exc}")
        return changes

    def _look_crl(self, forced: bool) -> _Changes:
        changes = _Changes()
        config = self.config
        if self._crl_watch.changed() or forced:
            try:
                changes.revoked = load_revocations(config, self._material, high_water=self._high_water)
            except SecureChatError as exc:
                changes.errors.append(f"CRL rejected, {self._in_force()} stays in force: {exc}")
            else:
                if changes.revoked is None and self._revoked:
                    changes.errors.append(f"{crl_location(config)[0]} disappeared; {self._in_force()} stays in force")
                self._record_crls(changes.revoked)
        return changes

    def _apply(self, changes: _Changes) -> None:
        for error in changes.errors:
            log.error("%s", error)
        sweep = False
        if changes.config is not None:
            self._apply_config(changes.config)
            self._retarget = True
            sweep = True
        if changes.material is not None and changes.material.certificate is not None:
            if changes.material.ca_bundle != (self._material.ca_bundle if self._material is not None else None):
                self._verifier = PeerVerifier(client_cas(changes.material))
            ready = server_certificate_configuration(changes.material, mtls=self._mtls)
            with self._lock:
                self._pending = ready
            old, self._material = self.serving_serial, changes.material
            self._crl_recheck = True
            log.info(
                "TLS files changed: new handshakes get certificate serial %s (was %s); open streams continue",
                self.serving_serial,
                old,
            )
        if changes.revoked is not None and changes.revoked != self._revoked:
            self._revoked = changes.revoked
            for item in changes.revoked.lists:
                log.info(
                    "CRL number %d from %s accepted: %d revoked certificate(s)",
                    item.number,
                    item.issuer,
                    len(item.serials),
                )
            self._stale_logged_at = None
            sweep = True
        self._warn_if_stale()
        if sweep and self._service is not None:
            ended = self._service.end_streams_of(lambda peer: self.refusal(peer, CHAT_METHOD))
            if ended:
                log.warning("ended %d open chat stream(s) whose certificate is revoked or no longer allowed", ended)

    # -- CRL bookkeeping -------------------------------------------------------

    def _in_force(self) -> str:
        if not self._revoked:
            return "no CRL"
        lists = self._revoked.lists
        if len(lists) == 1:
            return f"CRL number {lists[0].number}"
        return "CRL numbers " + ", ".join(f"{item.number} of {item.issuer}" for item in lists)

    def _record_crls(self, revoked: RevocationIndex | None) -> None:
        if revoked is None or self._high_water is None:
            return
        self._high_water.record(revoked.lists)
        if self._high_water.error is not None:
            log.warning(
                "CRL numbers are remembered in memory only (a rollback after a restart goes unseen): %s",
                self._high_water.error,
            )

    def _log_crls_at_start(self, crl_path: Path | None) -> None:
        if self._revoked is None:
            if crl_path is not None:
                log.debug("no CRL at %s: no certificate is revoked yet", crl_path)
            return
        for item in self._revoked.lists:
            log.info(
                "CRL number %d from %s in force: %d revoked certificate(s)", item.number, item.issuer, len(item.serials)
            )
        if self._high_water is not None:
            log.info("highest CRL numbers seen are kept in %s", self._high_water.path)
        self._warn_if_stale()

    def _warn_if_stale(self) -> None:
        """WARNING for every CRL in force past its nextUpdate: when first seen, then hourly."""
        if not self._revoked:
            return
        stale = [item for item in self._revoked.lists if item.stale()]
        if not stale:
            self._stale_logged_at = None
            return
        now = time.monotonic()
        if self._stale_logged_at is not None and now - self._stale_logged_at < STALE_REMINDER_SECONDS:
            return
        self._stale_logged_at = now
        for item in stale:
            log.warning(
                "CRL number %d from %s is past its nextUpdate (%s): it is still enforced, but a newer one should exist."
                " Run 'securechat certs crl' in the CA's directory and ship the new crl.pem",
                item.number,
                item.issuer,
                f"{item.next_update:%Y-%m-%d %H:%M} UTC" if item.next_update else "?",
            )

    def _apply_config(self, new: ServerConfig) -> None:
        old = self.config
        needs_restart = [name for name in RESTART_FIELDS if getattr(old, name) != getattr(new, name)]
        if (old.tls is not None and old.tls.mtls) != (new.tls is not None and new.tls.mtls):
            needs_restart.append("tls.mtls")
        if needs_restart:
            log.warning("%s: %s changed; restart the server to apply it", new.source.name, ", ".join(needs_restart))
        self._policy = AuthzPolicy(new.allow, dict(new.authz_methods))
        self.config = new
        log.info(
            "%s reloaded: authz allow %s, %d per-method rule(s)",
            new.source.name,
            ", ".join(sorted(new.allow)) if new.allow is not None else "(any verified client)",
            len(new.authz_methods),
        )


def _tls_paths(config: ServerConfig) -> list[Path | None]:
    if config.tls is None:
        return []
    return [config.tls.cert, config.tls.key, config.tls.client_ca]
