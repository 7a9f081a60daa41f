"""`securechat doctor`: check a server or client config link by link.

`run_checks(path)` returns one `Finding` per check, in the order a person
would debug: the config, each file, the key, the chain, the EKU, validity,
the local CRL; for a client then the network: reachable, the server's
certificate covers the target name, the server trusts our certificate,
ALPN h2, and a WhoAmI round trip. It never raises for a broken setup and
never prints; `securechat.cli.doctor` renders the findings.

How the handshake failure is decoded: gRPC only reports "Socket closed"
when the server refuses a client certificate, so the doctor repeats the
handshake with Python's `ssl`. Under TLS 1.3 the server judges our
certificate after the client's side of the handshake is done, so one `recv`
tells: HTTP/2 SETTINGS (accepted), a TLS alert (its reason is decoded:
unknown CA, certificate required, certificate expired, unsupported
purpose), or a bare close. gRPC core closes without sending the alert, so
for a bare close the reason is worked out from our own certificate the way
the server's verifier would: none sent, expired, no clientAuth, else a CA
the server does not trust. Host names are
matched by OpenSSL's own rules (`check_hostname`): an IP target needs an IP
SAN, and the CN is not used when SANs exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from securechat import pki
from securechat.config import ClientConfig, ServerConfig, load_client_config, load_server_config
from securechat.errors import SecureChatError
from securechat.material import _shown as shown

EXPIRES_SOON = dt.timedelta(days=30)
"""The same threshold as `certs needs-renewal`: inside it, renew."""
TIMEOUT = 5.0

# TLS alert names (OpenSSL reason strings) -> what the server meant and the fix.
_ALERTS = (
    ("UNKNOWN_CA", "it does not trust the CA that signed our certificate", "Issue our certificate from the server's tls.client_ca, or add our CA to that bundle."),
    ("CERTIFICATE_REQUIRED", "it requires a client certificate and we sent none", "Set tls.cert and tls.key."),
    ("CERTIFICATE_EXPIRED", "our certificate has expired", "Run 'securechat certs renew NAME'."),
    ("UNSUPPORTED_CERTIFICATE", "our certificate is not for client authentication (unsupported purpose)", "Use a certificate from 'securechat certs client NAME'."),
    ("BAD_CERTIFICATE", "it rejected our certificate (bad certificate)", "Check it with 'securechat certs inspect'."),
    ("CERTIFICATE_REVOKED", "our certificate is revoked", "Ask for a new certificate."),
)


@dataclass(frozen=True)
class Finding:
    """One check: whether it passed, its name, what was found, and the fix when it failed."""

    ok: bool
    check: str
    message: str
    fix: str = ""


def run_checks(path: str | os.PathLike[str], *, timeout: float = TIMEOUT) -> list[Finding]:
    """Check the config at PATH: a client config (it has `target`) or a server config."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        data = None
    is_client = isinstance(data, dict) and "target" in data
    try:
        config = load_client_config(path) if is_client else load_server_config(path)
    except SecureChatError as exc:
        return [Finding(False, "config", str(exc), "Fix the config file.")]
    findings = [Finding(True, "config", f"{config.source.name} is a valid {'client' if is_client else 'server'} config")]
    if isinstance(config, ClientConfig):
        findings += _client_checks(config, timeout=timeout)
    else:
        findings += _server_checks(config)
    return findings


# -- local files -------------------------------------------------------------------


class _Stop(Exception):
    """A check failed in a way that makes the following ones meaningless."""


class _Report:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def ok(self, check: str, message: str) -> None:
        self.findings.append(Finding(True, check, message))

    def fail(self, check: str, message: str, fix: str, *, stop: bool = False) -> None:
        self.findings.append(Finding(False, check, message, fix))
        if stop:
            raise _Stop


def _load_cas(report: _Report, label: str, path: Path) -> list[x509.Certificate]:
    if not path.is_file():
        report.fail(f"{label} file", f"{shown(path)} not found", "Run 'securechat certs init' or fix the path.", stop=True)
    try:
        cas = pki.load_certificates(path)
    except SecureChatError as exc:
        report.fail(f"{label} file", str(exc), "Point it at the CA's ca.pem.", stop=True)
    if not all(pki.is_ca_certificate(ca) for ca in cas):
        report.fail(f"{label} file", f"{shown(path)} holds a certificate that is not a CA", "Point it at ca.pem.", stop=True)
    report.ok(f"{label} file", f"{shown(path)}: {len(cas)} CA certificate(s)")
    return cas


def _check_leaf(
    report: _Report, role: str, cert_path: Path, key_path: Path, cas: list[x509.Certificate], ca_label: str
) -> x509.Certificate:
    name = cert_path.stem
    for label, path in (("tls.cert", cert_path), ("tls.key", key_path)):
        if not path.is_file():
            report.fail(f"{label} file", f"{shown(path)} not found", f"Run 'securechat certs {role} {name}{_dir(path)}' or fix the path.", stop=True)
    report.ok("files", f"{shown(cert_path)} and {shown(key_path)} exist")
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o007:
        report.fail("key permissions", f"{shown(key_path)} is readable by other users (mode {mode:04o})", f"Run 'chmod 600 {shown(key_path)}'.")
    else:
        report.ok("key permissions", f"{shown(key_path)} is mode {mode:04o}")
    try:
        cert = pki.load_certificate(cert_path)
        key = pki.load_private_key(key_path)
    except SecureChatError as exc:
        report.fail("key matches certificate", str(exc), "Point tls.cert/tls.key at NAME.pem and NAME-key.pem.", stop=True)
    if pki.key_matches_certificate(key, cert):
        report.ok("key matches certificate", f"{shown(key_path)} is the key of {shown(cert_path)}")
    else:
        report.fail("key matches certificate", f"{shown(key_path)} does not match {shown(cert_path)}", f"Use the key issued with it, or 'securechat certs renew {name}{_dir(cert_path)}'.")
    if any(pki.is_signed_by(cert, ca) for ca in cas):
        report.ok("chain", f"{shown(cert_path)} is signed by a CA in {ca_label}")
    else:
        report.fail("chain", f"{shown(cert_path)} was not signed by the CA in {ca_label} (its issuer: {cert.issuer.rfc4514_string()})", f"Issue it from that CA, or point {ca_label} at its CA.")
    wanted = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    ekus = pki.extended_key_usages(cert)
    if wanted in ekus:
        report.ok("extended key usage", f"{pki.eku_name(wanted)}, as a {role} needs")
    else:
        have = ", ".join(sorted(pki.eku_name(e) for e in ekus)) or "none"
        report.fail("extended key usage", f"{shown(cert_path)} lacks {pki.eku_name(wanted)} (has {have})", f"Issue it with 'securechat certs {role} {name} --force{_dir(cert_path)}'.")
    now = pki.utc_now()
    left = pki.days_left(cert, now=now)
    if cert.not_valid_after_utc < now:
        report.fail("validity", f"{shown(cert_path)} expired on {cert.not_valid_after_utc:%Y-%m-%d} ({pki.days_text(left)})", f"Run 'securechat certs renew {name}{_dir(cert_path)}'.")
    elif cert.not_valid_before_utc > now:
        report.fail("validity", f"{shown(cert_path)} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC", "Check this machine's clock.")
    elif cert.not_valid_after_utc - now < EXPIRES_SOON:
        report.fail("validity", f"{shown(cert_path)} expires soon: {cert.not_valid_after_utc:%Y-%m-%d} ({pki.days_text(left)})", f"Run 'securechat certs renew {name}{_dir(cert_path)}'.")
    else:
        report.ok("validity", f"valid until {cert.not_valid_after_utc:%Y-%m-%d} ({pki.days_text(left)})")
    return cert


def _check_crl(report: _Report, crl_path: Path | None, cas: list[x509.Certificate], cert: x509.Certificate | None) -> None:
    if crl_path is None or not crl_path.is_file():
        report.ok("revocation", f"no CRL at {shown(crl_path)}" if crl_path else "no CRL configured")
        return
    try:
        revoked = pki.load_crl(crl_path.read_bytes(), cas, where=str(crl_path))
    except SecureChatError as exc:
        report.fail("revocation", str(exc), f"Re-sign it with 'securechat certs crl{_dir(crl_path)}'.")
        return
    if revoked.stale:
        report.fail("revocation", f"{shown(crl_path)} is past its nextUpdate", f"Run 'securechat certs crl{_dir(crl_path)}' and ship the new crl.pem.")
    if cert is not None and revoked.revokes(cert.issuer.rfc4514_string(), cert.serial_number):
        report.fail("revocation", f"our certificate (serial {cert.serial_number:x}) is revoked in {shown(crl_path)}", f"Ask for a new certificate (renewing a revoked one is refused): 'securechat certs client {cert_name(cert)} --force{_dir(crl_path)}'.")
    else:
        report.ok("revocation", f"{shown(crl_path)} (CRL number {revoked.number}) does not list our certificate" if cert is not None else f"{shown(crl_path)} (CRL number {revoked.number}) is signed by the client CA")


def _dir(path: Path) -> str:
    """` --dir DIR` for a fix command: the certs directory the file sits in, so the fix acts on that CA."""
    return f" --dir {shown(path.parent)}"


def cert_name(cert: x509.Certificate) -> str:
    names = [n.value for n in pki.subject_alternative_names(cert) if isinstance(n, x509.DNSName)]
    return names[0] if names else "NAME"


def _server_checks(config: ServerConfig) -> list[Finding]:
    from securechat.server.lifecycle import crl_location

    report = _Report()
    if config.tls is None:
        report.fail("tls", "insecure: true serves plaintext", "Configure tls (see 'securechat quickstart').")
        return report.findings
    try:
        cas = _load_cas(report, "tls.client_ca", config.tls.client_ca) if config.tls.client_ca else []
        _check_leaf(report, "server", config.tls.cert, config.tls.key, cas, "tls.client_ca") if cas else None
        _check_crl(report, crl_location(config)[0], cas, None)
    except _Stop:
        pass
    return report.findings


# -- the network -------------------------------------------------------------------


def _client_checks(config: ClientConfig, *, timeout: float) -> list[Finding]:
    report = _Report()
    if config.tls is None:
        report.fail("tls", "insecure: true: the connection is plaintext and unauthenticated", "Configure tls: {ca, cert, key}.")
        return report.findings
    tls = config.tls
    cert: x509.Certificate | None = None
    try:
        cas = _load_cas(report, "tls.ca", tls.ca)
        if tls.cert is not None and tls.key is not None:
            cert = _check_leaf(report, "client", tls.cert, tls.key, cas, "tls.ca")
            _check_crl(report, tls.ca.parent / "crl.pem", cas, cert)
        _check_network(report, config, cert, timeout=timeout)
    except _Stop:
        pass
    return report.findings


def _context(config: ClientConfig, *, client_cert: bool, check_hostname: bool) -> ssl.SSLContext:
    assert config.tls is not None
    context = ssl.create_default_context(cafile=str(config.tls.ca))
    context.check_hostname = check_hostname
    context.hostname_checks_common_name = False  # gRPC never falls back to the CN when SANs exist
    context.set_alpn_protocols(["h2"])
    if client_cert and config.tls.cert is not None and config.tls.key is not None:
        context.load_cert_chain(config.tls.cert, config.tls.key)
    return context


def _check_network(report: _Report, config: ClientConfig, cert: x509.Certificate | None, *, timeout: float) -> None:
    assert config.tls is not None
    host, port = config.target.host, config.target.port
    name = config.tls.server_name or host
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        report.fail("reachable", f"cannot connect to {config.target}: {exc.strerror or exc}", f"Start the server, or fix target in {config.source.name}.", stop=True)
    report.ok("reachable", f"{config.target} accepts connections")

    try:
        _handshake(host, port, _context(config, client_cert=False, check_hostname=True), name, timeout)
        report.ok("server name", f"'{name}' matches the server's certificate")
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code not in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            report.fail("server trusted", f"the server's certificate is not signed by the CA in {shown(config.tls.ca)} ({exc.verify_message})", "Point tls.ca at the CA that signed the server's certificate.", stop=True)
        served = _handshake(host, port, _context(config, client_cert=False, check_hostname=False), name, timeout)[0]
        sans = ", ".join(pki.san_to_text(n) for n in pki.subject_alternative_names(served)) or "none"
        kind = "an IP SAN" if _is_ip(name) else "a DNS SAN"
        report.fail("server name", f"'{name}' is not among the server certificate's names ({sans}); it needs {kind}", f"Reissue it with 'securechat certs server NAME --san {name}', or set tls.server_name.")
    except (OSError, ssl.SSLError) as exc:
        report.fail("server trusted", f"TLS handshake with {config.target} failed: {exc}", "Is it a securechat TLS port?", stop=True)

    try:
        context = _context(config, client_cert=True, check_hostname=False)
    except (OSError, ssl.SSLError) as exc:
        report.fail("server accepts our certificate", f"our certificate and key cannot be used ({exc})", "Fix the key/certificate pair first.", stop=True)
    served, alpn, alert = _handshake(host, port, context, name, timeout, read=True)
    if alert == "":
        alert = _likely_refusal(cert)
    if alpn == "h2":
        report.ok("ALPN", "h2 negotiated")
    else:
        report.fail("ALPN", f"the server negotiated {alpn!r}, not h2", "Connect to the gRPC port directly, not through an HTTP/1 proxy.")
    if alert is not None:
        meaning, fix = next(((m, f) for key, m, f in _ALERTS if key in alert), (f"TLS alert {alert}", "Check the server's log."))
        report.fail("server accepts our certificate", f"the server refused our certificate: {meaning} ({alert})", fix, stop=True)
    report.ok("server accepts our certificate", "the TLS handshake completed with our certificate" if cert else "the server does not require a client certificate")
    _check_who_am_i(report, config, cert)


def _handshake(
    host: str, port: int, context: ssl.SSLContext, name: str, timeout: float, *, read: bool = False
) -> tuple[x509.Certificate, str | None, str | None]:
    """(server certificate, ALPN, TLS alert reason the server sent after the handshake or None)."""
    with socket.create_connection((host, port), timeout=timeout) as raw, context.wrap_socket(raw, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
        alpn = tls.selected_alpn_protocol()
        alert = None
        if read:
            try:
                # A gRPC server sends its HTTP/2 SETTINGS at once; a refusal is an alert or a bare close ("").
                alert = None if tls.recv(1) else ""
            except ssl.SSLError as exc:
                alert = str(exc.reason or exc)
            except (TimeoutError, OSError):
                pass
    assert der is not None
    return x509.load_der_x509_certificate(der), alpn, alert


def _likely_refusal(cert: x509.Certificate | None) -> str:
    """The alert a verifier would have sent for CERT: what gRPC core decided but did not say."""
    if cert is None:
        return "CERTIFICATE_REQUIRED (inferred)"
    if cert.not_valid_after_utc < pki.utc_now():
        return "CERTIFICATE_EXPIRED (inferred)"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in pki.extended_key_usages(cert):
        return "UNSUPPORTED_CERTIFICATE (inferred)"
    return "UNKNOWN_CA (inferred)"


def _is_ip(name: str) -> bool:
    try:
        import ipaddress

        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _check_who_am_i(report: _Report, config: ClientConfig, cert: x509.Certificate | None) -> None:
    """Every method the client will call (WhoAmI, SayHello, Chat), each checked against the server's authz."""
    import grpc

    from securechat.client import open_channel, say_hello, who_am_i

    async def ask() -> list[tuple[str, str | SecureChatError]]:
        results: list[tuple[str, str | SecureChatError]] = []
        async with open_channel(config) as channel:
            try:
                identity = await who_am_i(channel)
                results.append(("WhoAmI", f"{identity.name}\0{identity.serial}"))
            except SecureChatError as exc:
                results.append(("WhoAmI", exc))
                if getattr(exc, "code", None) is not grpc.StatusCode.PERMISSION_DENIED:
                    return results  # not about this method (unreachable, untrusted, revoked): once is enough
            try:
                results.append(("SayHello", await say_hello(channel)))
            except SecureChatError as exc:
                results.append(("SayHello", exc))
            results.append(("Chat", await _open_chat(channel)))
        return results

    try:
        results = asyncio.run(ask())
    except SecureChatError as exc:
        report.fail("WhoAmI", str(exc), "")
        return
    for method, result in results:
        if isinstance(result, SecureChatError):
            report.fail(method, str(result), "")
        elif method == "WhoAmI":
            name, serial = result.split("\0")
            if cert is not None and serial != f"{cert.serial_number:x}":
                report.fail("WhoAmI", f"the server sees serial {serial}, not our {cert.serial_number:x}", "Check tls.cert.")
            else:
                report.ok("WhoAmI", f"the server says we are '{name}' (serial {serial})")
        elif method == "SayHello":
            report.ok("SayHello", f"allowed: {result}")
        else:
            report.ok("Chat", "allowed: a chat stream opens (no room was joined)")


async def _open_chat(channel: object) -> str | SecureChatError:
    """Open Chat and half-close it at once: authz decides at the call's start, and no room is joined."""
    import grpc

    from securechat.client import Channel

    assert isinstance(channel, Channel)
    call = channel.stub.Chat()
    try:
        # A call whose connection already failed raises gRPC's internal batch error here; reading says why.
        with contextlib.suppress(Exception):
            await call.done_writing()
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        return channel.explain(exc)
    return "ok"
