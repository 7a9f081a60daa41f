"""`securechat doctor`: check a server or client config link by link.

`run_checks(path)` returns one `Finding` per check, in the order a person
would debug: the config, each file, the key, the chain, the EKU, validity,
the local CRL; for a client then the network: reachable, the server's
certificate covers the target name, the server trusts our certificate,
ALPN h2, and a WhoAmI round trip. It never raises for a broken setup and
never prints; `securechat.cli.doctor` renders the findings.

Doctor decides nothing about certificates itself: the key match, the chain
up to the trust anchors (leaf + intermediates, any length), EKU, validity,
the server's name and revocation are `securechat.tls.checks`' verdicts --
the very code the config loader and the server use, so they cannot
disagree -- and a failed handshake is named by `securechat.tls.failures`.
A finding carries the core's problem code (`Finding.code`).

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
import os
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from securechat import pki
from securechat.config import ClientConfig, ServerConfig, crl_location, load_client_config, load_server_config
from securechat.config.yaml_reader import config_source, read_yaml
from securechat.errors import ConfigError, SecureChatError
from securechat.tls import checks, failures
from securechat.tls.checks import CHAIN_CODES, Code, Problem, Purpose, RevocationIndex
from securechat.tls.material import shown
from securechat.tls.revocation import CrlFileError, load_crls, read_crl_file

if TYPE_CHECKING:
    from securechat.config.ca import RenewConfig

TIMEOUT = 5.0


@dataclass(frozen=True)
class Finding:
    """One check: whether it passed, its name, what was found, and the fix when it failed."""

    ok: bool
    check: str
    message: str
    fix: str = ""
    code: str = ""
    """The `tls.checks.Code` (or `tls.failures.TlsFailure` code) behind a failed check, when one decided it."""
    warning: bool = False
    """OK but worth acting on (e.g. expiring with nothing renewing it): printed WARN, does not fail."""


def run_checks(path: str | os.PathLike[str], *, timeout: float = TIMEOUT) -> list[Finding]:
    """Check the config at PATH: a client config (it has `target`) or a server config."""
    try:
        data = read_yaml(config_source(path))  # the one bounded reader: a FIFO or billion laughs is one finding
    except ConfigError:
        data = None  # the loader below reports it
    is_client = isinstance(data, dict) and "target" in data
    try:
        config = load_client_config(path) if is_client else load_server_config(path)
    except ConfigError as exc:
        return [Finding(False, "config", str(problem), "Fix the config file.") for problem in exc.problems]
    except SecureChatError as exc:
        return [Finding(False, "config", str(exc), "Fix the config file.")]
    findings = [
        Finding(True, "config", f"{config.source.name} is a valid {'client' if is_client else 'server'} config")
    ]
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

    def warn(self, check: str, message: str, fix: str) -> None:
        self.findings.append(Finding(True, check, message, fix, warning=True))

    def fail(self, check: str, message: str, fix: str, *, stop: bool = False, code: str = "") -> None:
        self.findings.append(Finding(False, check, message, fix, code))
        if stop:
            raise _Stop

    def problem(self, check: str, problem: Problem, fix: str | None = None, *, stop: bool = False) -> None:
        self.fail(check, problem.message, problem.fix if fix is None else fix, stop=stop, code=problem.code.value)


def _load_cas(report: _Report, label: str, path: Path) -> list[x509.Certificate]:
    if not path.is_file():
        report.fail(
            f"{label} file",
            f"{shown(path)} not found",
            f"Run 'securechat certs init{_dir(path)}' or fix the path.",
            stop=True,
        )
    try:
        cas = pki.load_certificates(path)
    except SecureChatError as exc:
        report.fail(f"{label} file", str(exc), "Point it at the CA's ca.pem.", stop=True)
    not_a_ca = checks.check_anchors(cas, where=shown(path))
    if not_a_ca is not None:
        report.problem(f"{label} file", not_a_ca, stop=True)
    report.ok(f"{label} file", f"{shown(path)}: {len(cas)} CA certificate(s)")
    return cas


_LEAF_CODES = (Code.WRONG_EKU, Code.LEAF_IS_CA, Code.KEY_USAGE, Code.NO_SAN)


@dataclass(frozen=True)
class _Leaf:
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    """What the owner presents: the leaf, then the intermediates of its file."""
    verdict: checks.Verdict


def _check_leaf(
    report: _Report,
    role: str,
    cert_path: Path,
    key_path: Path,
    cas: list[x509.Certificate],
    ca_path: Path,
    ca_field: str,
    renew: RenewConfig | None = None,
) -> _Leaf:
    name = cert_path.stem
    purpose = Purpose.SERVER if role == "server" else Purpose.CLIENT
    for label, path in (("tls.cert", cert_path), ("tls.key", key_path)):
        if not path.is_file():
            report.fail(
                f"{label} file",
                f"{shown(path)} not found",
                f"Run 'securechat certs {role} {name}{_dir(path)}' or fix the path.",
                stop=True,
            )
    report.ok("files", f"{shown(cert_path)} and {shown(key_path)} exist")
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o007:
        report.fail(
            "key permissions",
            f"{shown(key_path)} is readable by other users (mode {mode:04o})",
            f"Run 'chmod 600 {shown(key_path)}'.",
        )
    else:
        report.ok("key permissions", f"{shown(key_path)} is mode {mode:04o}")
    try:
        chain = pki.load_certificates(cert_path)
        key = pki.load_private_key(key_path)
    except SecureChatError as exc:
        report.fail(
            "key matches certificate", str(exc), "Point tls.cert/tls.key at NAME.pem and NAME-key.pem.", stop=True
        )
    cert = chain[0]
    mismatch = checks.check_key(cert, key, where=shown(key_path), cert_where=shown(cert_path))
    if mismatch is None:
        report.ok("key matches certificate", f"{shown(key_path)} is the key of {shown(cert_path)}")
    else:
        report.problem(
            "key matches certificate",
            mismatch,
            f"Use the key issued with it, or 'securechat certs renew {name}{_dir(cert_path)}'.",
        )
    verdict = checks.verify_chain(
        cert,
        chain[1:],
        cas,
        purpose=purpose,
        where=shown(cert_path),
        anchors_where=shown(ca_path),
        anchors_field=ca_field,
    )
    broken = [p for p in verdict.problems if p.code in CHAIN_CODES or p.depth > 0]
    if broken:
        report.problem("chain", broken[0])
    else:
        built = checks.build_path(cert, chain[1:], cas) or [cert]
        via = f" through {len(built) - 2} intermediate(s)" if len(built) > 2 else ""
        report.ok("chain", f"{shown(cert_path)} chains{via} to {checks.describe(built[-1])} in {ca_field}")
    wrong = verdict.of(_LEAF_CODES)
    if wrong:
        report.problem(
            "extended key usage", wrong[0], f"Issue it with 'securechat certs {role} {name} --force{_dir(cert_path)}'."
        )
    else:
        report.ok("extended key usage", f"{purpose.eku_name}, as a {role} needs")
    invalid = [p for p in verdict.of((Code.EXPIRED, Code.NOT_YET_VALID)) if p.depth == 0]
    if invalid and invalid[0].code is Code.NOT_YET_VALID:
        report.problem("validity", invalid[0], "Check this machine's clock.")
    elif invalid:  # expired: the core's verdict, with the fix that fits how this certificate is renewed
        report.problem("validity", invalid[0], _renew_fix(name, renew, cert_path))
    else:
        _check_validity(report, cert, cert_path, name, renew)
    return _Leaf(cert, tuple(chain), verdict)


def _check_validity(
    report: _Report, cert: x509.Certificate, cert_path: Path, name: str, renew: RenewConfig | None
) -> None:
    """Expiry judged against the certificate's own lifetime and whether tls.renew renews it (pki.judge_expiry)."""
    now = pki.utc_now()
    verdict = pki.judge_expiry(cert, now=now, renewal_configured=renew is not None)
    if cert.not_valid_before_utc > now:
        report.fail(
            "validity",
            f"{shown(cert_path)} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "Check this machine's clock.",
        )
    elif verdict.level == "fail" and renew is not None and cert.not_valid_after_utc > now:
        report.fail(
            "validity",
            f"{shown(cert_path)}: {verdict.message}",
            f"Check that the CA at {renew.ca} is up and reachable (the renewer logs why it fails), or renew now: 'securechat certs renew {name} --ca {renew.ca}'.",
        )
    elif verdict.level == "fail":
        report.fail("validity", f"{shown(cert_path)} {verdict.message}", _renew_fix(name, renew, cert_path))
    elif verdict.level == "warn":
        report.warn(
            "validity",
            f"{shown(cert_path)} {verdict.message}",
            f"Run 'securechat certs renew {name}{_dir(cert_path)}', or set tls.renew so it renews itself.",
        )
    else:
        report.ok("validity", verdict.message)
    if renew is not None:
        _check_renewal_ca(report, renew)


def _renew_fix(name: str, renew: RenewConfig | None, cert_path: Path) -> str:
    """How to replace an expired certificate: an expired certificate cannot renew online."""
    if renew is not None:
        return (
            "Enroll again with a new token ('securechat ca token NAME' on the CA): an expired certificate cannot renew."
        )
    return f"Run 'securechat certs renew {name}{_dir(cert_path)}'."


def _check_renewal_ca(report: _Report, renew: RenewConfig) -> None:
    """tls.renew: the CA service answers TrustBundle over TLS verified with tls.renew.ca_cert."""
    from securechat.ca.client import CaClient, CaError, CaTarget

    try:
        target = CaTarget(str(renew.ca), renew.ca_cert.read_bytes(), renew.server_name)
    except OSError as exc:
        report.fail("renewal CA", f"{shown(renew.ca_cert)} cannot be read ({exc.strerror})", "Fix tls.renew.ca_cert.")
        return

    async def probe() -> bytes:
        async with CaClient(target) as client:
            return await client.trust_bundle(timeout=TIMEOUT)

    try:
        asyncio.run(probe())
    except CaError as exc:
        report.fail("renewal CA", str(exc), f"Start the CA service, or fix tls.renew.ca ({renew.ca}).")
    else:
        report.ok("renewal CA", f"the CA at {renew.ca} answers and is trusted by {shown(renew.ca_cert)}")


def _check_crl(
    report: _Report,
    crl_path: Path | None,
    signers: list[x509.Certificate],
    leaf: _Leaf | None,
    cas: list[x509.Certificate],
) -> None:
    if crl_path is None or not crl_path.exists():
        report.ok("revocation", f"no CRL at {shown(crl_path)}" if crl_path else "no CRL configured")
        return
    try:
        data = read_crl_file(crl_path, where=shown(crl_path))
    except CrlFileError as exc:
        report.problem("revocation", exc.problem)
        return
    lists = load_crls(data, signers, where=shown(crl_path))
    if isinstance(lists, Problem):
        report.problem("revocation", lists, f"Re-sign it with 'securechat certs crl{_dir(crl_path)}'.")
        return
    for item in lists:
        if item.stale():
            report.fail(
                "revocation",
                f"{shown(crl_path)} (CRL number {item.number}) is past its nextUpdate",
                f"Run 'securechat certs crl{_dir(crl_path)}' and ship the new crl.pem.",
                code="crl-stale",
            )
    numbers = ", ".join(str(item.number) for item in lists)
    if leaf is None:
        report.ok("revocation", f"{shown(crl_path)} (CRL number {numbers}) is signed by the client CA")
        return
    path = leaf.verdict.chain or tuple(checks.build_path(leaf.cert, leaf.chain[1:], cas) or (leaf.cert,))
    revoked = checks.revocation_problems(path, RevocationIndex(lists), where="our certificate")
    if revoked:
        report.problem(
            "revocation",
            revoked[0],
            f"Ask for a new certificate (renewing a revoked one is refused): 'securechat certs client {cert_name(leaf.cert)} --force{_dir(crl_path)}'.",
        )
    else:
        report.ok("revocation", f"{shown(crl_path)} (CRL number {numbers}) lists no certificate of our chain")


def _dir(path: Path) -> str:
    """` --dir DIR` for a fix command: the certs directory the file sits in, so the fix acts on that CA."""
    return f" --dir {shown(path.parent)}"


def cert_name(cert: x509.Certificate) -> str:
    names = [n.value for n in pki.subject_alternative_names(cert) if isinstance(n, x509.DNSName)]
    return names[0] if names else "NAME"


def _server_checks(config: ServerConfig) -> list[Finding]:
    report = _Report()
    if config.tls is None:
        report.fail("tls", "insecure: true serves plaintext", "Configure tls (see 'securechat quickstart').")
        return report.findings
    try:
        cas = _load_cas(report, "tls.client_ca", config.tls.client_ca) if config.tls.client_ca else []
        if cas and config.tls.client_ca is not None:
            leaf = _check_leaf(
                report,
                "server",
                config.tls.cert,
                config.tls.key,
                cas,
                config.tls.client_ca,
                "tls.client_ca",
                config.tls.renew,
            )
            signers = cas + [c for c in leaf.chain[1:] if checks.is_ca(c)]
        else:
            signers = cas
        _check_crl(report, crl_location(config)[0], signers, None, cas)
    except _Stop:
        pass
    return report.findings


# -- the network -------------------------------------------------------------------


def _client_checks(config: ClientConfig, *, timeout: float) -> list[Finding]:
    report = _Report()
    if config.tls is None:
        report.fail(
            "tls", "insecure: true: the connection is plaintext and unauthenticated", "Configure tls: {ca, cert, key}."
        )
        return report.findings
    tls = config.tls
    leaf: _Leaf | None = None
    try:
        cas = _load_cas(report, "tls.ca", tls.ca)
        if tls.cert is not None and tls.key is not None:
            leaf = _check_leaf(report, "client", tls.cert, tls.key, cas, tls.ca, "tls.ca", tls.renew)
            signers = cas + [c for c in leaf.chain[1:] if checks.is_ca(c)]
            _check_crl(report, tls.ca.parent / "crl.pem", signers, leaf, cas)
        _check_network(report, config, leaf, cas, timeout=timeout)
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


def _check_network(
    report: _Report, config: ClientConfig, leaf: _Leaf | None, cas: list[x509.Certificate], *, timeout: float
) -> None:
    assert config.tls is not None
    cert = leaf.cert if leaf is not None else None
    host, port = config.target.host, config.target.port
    name = config.tls.server_name or host
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        report.fail(
            "reachable",
            f"cannot connect to {config.target}: {exc.strerror or exc}",
            f"Start the server, or fix target in {config.source.name}.",
            stop=True,
        )
    report.ok("reachable", f"{config.target} accepts connections")

    try:
        _handshake(host, port, _context(config, client_cert=False, check_hostname=True), name, timeout)
        report.ok("server name", f"'{name}' matches the server's certificate")
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code not in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            report.fail(
                "server trusted",
                f"the server's certificate is not signed by the CA in {shown(config.tls.ca)} ({exc.verify_message})",
                "Point tls.ca at the CA that signed the server's certificate.",
                stop=True,
            )
        served = _handshake(host, port, _context(config, client_cert=False, check_hostname=False), name, timeout)[0]
        verdict = checks.verify_chain(
            served, [], cas, purpose=Purpose.SERVER, server_name=name, where="the server certificate"
        )
        mismatch = verdict.of([Code.SAN_MISMATCH])
        if mismatch:
            report.problem("server name", mismatch[0])
        else:  # OpenSSL's host check refused what cryptography's accepts: say what OpenSSL said
            report.fail(
                "server name",
                f"'{name}' does not match the server's certificate ({exc.verify_message})",
                f"Reissue it with 'securechat certs server NAME --san {name}', or set tls.server_name.",
                code=failures.TlsFailure.SERVER_NAME_MISMATCH.code,
            )
    except (OSError, ssl.SSLError) as exc:
        report.fail(
            "server trusted",
            f"TLS handshake with {config.target} failed: {exc}",
            "Is it a securechat TLS port?",
            stop=True,
        )

    try:
        context = _context(config, client_cert=True, check_hostname=False)
    except (OSError, ssl.SSLError) as exc:
        report.fail(
            "server accepts our certificate",
            f"our certificate and key cannot be used ({exc})",
            "Fix the key/certificate pair first.",
            stop=True,
        )
    served, alpn, alert = _handshake(host, port, context, name, timeout, read=True)
    if alpn == "h2":
        report.ok("ALPN", "h2 negotiated")
    else:
        report.fail(
            "ALPN",
            f"the server negotiated {alpn!r}, not h2",
            "Connect to the gRPC port directly, not through an HTTP/1 proxy.",
        )
    if alert is not None:
        local = leaf.verdict.first if leaf is not None else None
        failure = failures.diagnose(failures.Evidence(alert=alert, sent_certificate=cert is not None, local=local))
        seen = alert if alert else f"{failure.code}, inferred from our certificate: the server closed without an alert"
        meaning = failure.client_view if failure is not failures.TlsFailure.OTHER else f"TLS alert {alert}"
        fix = failure.fix.replace("NAME", cert_name(cert)) if cert is not None else failure.fix
        report.fail(
            "server accepts our certificate",
            f"the server refused our certificate: {meaning} ({seen})",
            fix,
            stop=True,
            code=failure.code,
        )
    report.ok(
        "server accepts our certificate",
        "the TLS handshake completed with our certificate"
        if cert
        else "the server does not require a client certificate",
    )
    _check_who_am_i(report, config, cert)


def _handshake(
    host: str, port: int, context: ssl.SSLContext, name: str, timeout: float, *, read: bool = False
) -> tuple[x509.Certificate, str | None, str | None]:
    """(server certificate, ALPN, TLS alert reason the server sent after the handshake or None)."""
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
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
                report.fail(
                    "WhoAmI", f"the server sees serial {serial}, not our {cert.serial_number:x}", "Check tls.cert."
                )
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
