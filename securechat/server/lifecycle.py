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
- The CRL (`crl:`, default crl.pem next to tls.client_ca): accepted only if a
  CA in the client CA bundle signed it; a bad one is logged and the previous
  one stays in force. New calls from a revoked certificate get
  UNAUTHENTICATED; its open Chat streams are ended at once.
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
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509

from securechat import pki
from securechat.config import ServerConfig, load_server_config
from securechat.errors import ConfigError, SecureChatError
from securechat.identity import AuthzPolicy, PeerIdentity
from securechat.material import TlsMaterial, load_server_material
from securechat.protocol import Reason, Refusal
from securechat.server.service import SERVICE_NAME, ChatService
from securechat.tls import dynamic_server_credentials, server_certificate_configuration
from securechat.watch import FileWatch

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
"""How often files are looked at: a revocation or rotation is seen within this."""
RELOAD_SECONDS = 10.0
"""How long one source (config, TLS files, CRL) may take to be looked at before the poll goes on without it."""
MAX_CONFIG_BYTES = 1 << 20
"""A config file bigger than this is not reloaded (a server.yaml is a few hundred bytes)."""
CHAT_METHOD = f"/{SERVICE_NAME}/Chat"
RESTART_FIELDS = ("insecure", "limits", "health_port", "log_level", "log_format", "grace_seconds")


def crl_location(config: ServerConfig) -> tuple[Path | None, bool]:
    """(the CRL path, whether the config names it): `crl:`, else crl.pem next to tls.client_ca."""
    if config.crl is not None:
        return config.crl, True
    if config.tls is not None and config.tls.client_ca is not None:
        return config.tls.client_ca.parent / "crl.pem", False
    return None, False


def load_revocations(config: ServerConfig, material: TlsMaterial | None) -> pki.RevokedSet | None:
    """The verified CRL the config points at; None when the default one is absent.

    Raises ConfigError when `crl:` names a missing file, or a CRL is present
    but unreadable or not signed by the client CA: fail closed at start.
    """
    path, explicit = crl_location(config)
    if path is None:
        return None
    field_name = "crl" if explicit else "tls.client_ca"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                config.source.name, "crl", f"{path} not found.", "Write it with 'securechat certs revoke NAME', or remove crl."
            ) from None
        return None
    except OSError as exc:
        raise ConfigError(config.source.name, field_name, f"{path} cannot be read ({exc.strerror}).", "Fix its permissions.") from exc
    try:
        return pki.load_crl(data, client_cas(material), where=str(path))
    except SecureChatError as exc:
        raise ConfigError(config.source.name, field_name, str(exc)) from exc


def client_cas(material: TlsMaterial | None) -> list[x509.Certificate]:
    if material is None or material.ca_bundle is None:
        return []
    return x509.load_pem_x509_certificates(material.ca_bundle)


@dataclass
class _Changes:
    """What one poll found, computed in a worker thread and applied on the event loop."""

    config: ServerConfig | None = None
    material: TlsMaterial | None = None
    revoked: pki.RevokedSet | None = None
    errors: list[str] = field(default_factory=list)


class ServerLifecycle:
    """Live TLS material, CRL and authz policy of one server, and the task that keeps them current."""

    def __init__(self, config: ServerConfig, material: TlsMaterial | None) -> None:
        self.config = config
        self._material = material
        self._mtls = config.tls is not None and config.tls.mtls
        self._policy = AuthzPolicy(config.allow, dict(config.authz_methods))
        self._revoked = load_revocations(config, material)
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

    def refusal(self, peer: PeerIdentity, method: str) -> Refusal | None:
        """Why PEER may not call METHOD now (revoked, not allowed), or None."""
        revoked = self._revoked
        if revoked is not None and revoked.revokes(peer.issuer, int(peer.serial, 16)):
            return Refusal(grpc.StatusCode.UNAUTHENTICATED, Reason.REVOKED, f"certificate serial {peer.serial} ({peer.name}) is revoked")
        if not self._policy.permits(peer, method):
            return Refusal(grpc.StatusCode.PERMISSION_DENIED, Reason.NOT_ALLOWED, f"identity '{peer.name}' is not allowed to call {method}")
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
            self._crl_watch.retarget([crl_location(self.config)[0]])
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
                    source, RELOAD_SECONDS, self._describe(source),
                )
                continue
            del self._inflight[source]
            self._stale.discard(source)
            if source == "crl":
                self._crl_recheck = False
            self._apply(future.result())

    def _describe(self, source: str) -> str:
        paths = {"config": [self.config.source], "tls": _tls_paths(self.config), "crl": [crl_location(self.config)[0]]}[source]
        named = ", ".join(str(path) for path in paths if path is not None)
        return f"{named}: a FIFO, a hung mount, or a file too big or too nested to parse?"

    def _look_config(self, forced: bool) -> _Changes:
        changes = _Changes()
        if not (self._config_watch.changed() or forced):
            return changes
        # TODO(merge): replace with configpkg's bounded file and YAML readers (size, non-regular files, aliases, depth).
        try:
            size = self.config.source.stat().st_size
        except OSError:
            size = 0
        if size > MAX_CONFIG_BYTES:
            changes.errors.append(
                f"config reload refused, the running config stays: {self.config.source} is {size} bytes (more than {MAX_CONFIG_BYTES})"
            )
            return changes
        try:
            changes.config = load_server_config(self.config.source, listen=str(self.config.listen))
        except SecureChatError as exc:
            changes.errors.append(f"config reload refused, the running config stays: {exc}")
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
                changes.revoked = load_revocations(config, self._material)
            except SecureChatError as exc:
                number = self._revoked.number if self._revoked is not None else None
                changes.errors.append(f"CRL rejected, CRL number {number} stays in force: {exc}")
            else:
                if changes.revoked is None and self._revoked is not None:
                    changes.errors.append(
                        f"{crl_location(config)[0]} disappeared; CRL number {self._revoked.number} stays in force"
                    )
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
            log.info(
                "CRL number %d from %s accepted: %d revoked certificate(s)%s",
                changes.revoked.number,
                changes.revoked.issuer,
                len(changes.revoked.serials),
                " (STALE: past its nextUpdate; run 'securechat certs crl')" if changes.revoked.stale else "",
            )
            sweep = True
        if sweep and self._service is not None:
            ended = self._service.end_streams_of(lambda peer: self.refusal(peer, CHAT_METHOD))
            if ended:
                log.warning("ended %d open chat stream(s) whose certificate is revoked or no longer allowed", ended)

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
