"""The CA service renews its own TLS certificate in-process and serves the new one live (real processes).

The service's certificate is 12 s long here (ca.yaml gives servers 30 s after
renewal): it is renewed at about 2/3 (8 s), the files are replaced (key
0600), a new handshake gets the new serial while a connection opened before
keeps working; its failing twin is a revoked service certificate, which is
refused, said as an error, and the old one stays served.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from cryptography import x509

from securechat import pki
from securechat.ca.client import CaClient
from securechat.tls import checks
from tests.ca.conftest import CaEnv
from tests.ca.processes import issue_short, start_ca_process
from tests.ca.test_ca_cli import _run

SHORT = {"lifetimes": {"client": "30s", "server": "30s"}, "testing_short_lifetimes": True}


def _served(env: CaEnv, port: int) -> str:
    """The serial a new TLS handshake with the CA service gets (no client certificate: the Enroll port)."""
    context = ssl.create_default_context(cafile=str(env.store.root_cert_path))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return f"{x509.load_der_x509_certificate(der).serial_number:x}"


def test_the_ca_renews_its_own_certificate_and_serves_it_live(ca_env: CaEnv) -> None:
    """Renewed at ~2/3 of 12 s: the files change, the next handshake gets it, a kept connection still works."""
    issue_short(ca_env, "ca-service", kind="server", seconds=12)
    first = f"{pki.load_certificate(ca_env.store.cert_path('ca-service')).serial_number:x}"
    ca_env.ca_yaml(**SHORT)
    ca, port = start_ca_process(ca_env)
    try:
        assert _served(ca_env, port) == first

        async def kept_connection() -> tuple[bytes, bytes]:
            async with CaClient(ca_env.target(port)) as client:
                before = await client.trust_bundle()
                await asyncio.to_thread(ca.wait_for, r"renewed the CA service's own certificate ca-service\.pem")
                return before, await client.trust_bundle()  # the connection opened before the switch

        before, after = asyncio.run(kept_connection())
        assert before == after == ca_env.trust_pem
        line = ca.wait_for(r"renewed the CA service's own certificate ca-service\.pem: serial ([0-9a-f]+) \(was ([0-9a-f]+)\)")
        renewed, was = line.group(1), line.group(2)
        assert was == first and renewed != first
        assert ", valid until " in line.string and "new handshakes get it, open connections keep theirs" in line.string
        on_disk = pki.load_certificates(ca_env.store.cert_path("ca-service"))
        assert f"{on_disk[0].serial_number:x}" == renewed
        assert len(on_disk) == 2  # leaf + intermediate, as every leaf in a hierarchy
        assert ca_env.store.key_path("ca-service").stat().st_mode & 0o777 == 0o600
        assert checks.check_key(on_disk[0], pki.load_private_key(ca_env.store.key_path("ca-service"))) is None
        assert _served(ca_env, port) == renewed
        assert ca.count(r"event=renewed identity=ca-service .*caller=self") == 1
    finally:
        assert ca.stop() == 0


def test_a_revoked_ca_certificate_is_not_renewed_and_stays_served(ca_env: CaEnv) -> None:
    """Failing twin: 'ca revoke ca-service' before it is due: refused as revoked, said once, the old serial stays."""
    issue_short(ca_env, "ca-service", kind="server", seconds=12)
    first = f"{pki.load_certificate(ca_env.store.cert_path('ca-service')).serial_number:x}"
    config = ca_env.ca_yaml(**SHORT)
    ca, port = start_ca_process(ca_env)
    try:
        revoked = _run("ca", "revoke", "ca-service", "--config", str(config))
        assert revoked.exit_code == 0, revoked.output
        ca.wait_for(
            rf"the CA service's own certificate ca-service\.pem \(serial {first}\) cannot renew: the certificate of"
            rf" ca-service \(serial {first}\) is revoked in .*crl\.pem \(CRL number 1\): a revoked certificate cannot"
            rf" renew\. Not retrying until .*ca-service\.pem changes; the certificate expires in \d+s"
        )
        assert _served(ca_env, port) == first
        assert f"{pki.load_certificate(ca_env.store.cert_path('ca-service')).serial_number:x}" == first
        assert ca.count("renewed the CA service's own certificate") == 0
        assert ca.count("cannot renew: the certificate of ca-service") == 1
    finally:
        ca.stop()


async def test_a_service_certificate_missing_from_the_records_is_recorded_then_renewed(ca_env: CaEnv, start_ca) -> None:
    """A ca-service.pem issued elsewhere (not in index.json): renew_now records it first, then renews it like any other."""
    import json

    index = json.loads(ca_env.store.index_path.read_text())
    index["certificates"] = [e for e in index.get("certificates", []) if e.get("name") != "ca-service"]
    ca_env.store.index_path.write_text(json.dumps(index))
    service = await start_ca(**SHORT)
    old = service.own.serving_serial
    assert service.authority.db.run(lambda tx: tx.certificate(old)) is None
    new = await service.own.renew_now()
    adopted = service.authority.db.run(lambda tx: tx.certificate(old))
    renewed = service.authority.db.run(lambda tx: tx.certificate(new))
    assert (adopted.via, adopted.caller, adopted.name) == ("import", "self", "ca-service")
    assert (renewed.via, renewed.renewed_from, renewed.kind) == ("renew", old, "server")
    assert await asyncio.to_thread(_served, ca_env, service.port) == new != old
