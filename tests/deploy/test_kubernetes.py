"""deploy/kubernetes + deploy/cert-manager: the pod's command, files and probes, run for real.

A cert-manager Secret is mounted the way the kubelet does it -- files under
a timestamped directory, a `..data` symlink to it, and `tls.crt`-style
symlinks through `..data` -- with the Deployment's defaultMode. The
certificates are issued from our own CA with exactly the fields the
Certificate resources ask cert-manager for.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import ssl
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from deploy_support import DEPLOY, ETC, free_port, load_yaml_documents, run
from grpc_health.v1 import health_pb2, health_pb2_grpc

from securechat import pki

KUBERNETES = DEPLOY / "kubernetes"
CERT_MANAGER = DEPLOY / "cert-manager"
EXEC_PROBE = KUBERNETES / "components" / "exec-probe"
USAGES = {"server auth": ExtendedKeyUsageOID.SERVER_AUTH, "client auth": ExtendedKeyUsageOID.CLIENT_AUTH}


# -- reading the manifests -------------------------------------------------------


def resource(path: Path, kind: str, name: str | None = None) -> dict:
    for doc in load_yaml_documents(path):
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name):
            return doc
    raise AssertionError(f"{path}: no {kind} {name or ''}")


def deployment() -> dict:
    return resource(KUBERNETES / "deployment.yaml", "Deployment")


def server_container() -> dict:
    (container,) = deployment()["spec"]["template"]["spec"]["containers"]
    return container


def volume(name: str) -> dict:
    (found,) = [v for v in deployment()["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    return found


def mount_path(container: dict, volume_name: str) -> str:
    (found,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume_name]
    return found


def certificate(name: str) -> dict:
    return resource(CERT_MANAGER / f"certificate-{name}.yaml", "Certificate")


def hours(text: str) -> float:
    match = re.fullmatch(r"(\d+)h", text)
    assert match, f"durations here are written in whole hours, got {text!r}"
    return float(match.group(1))


# -- what the kubelet and cert-manager would do ----------------------------------


def issue_like_cert_manager(ca: pki.CertificateAuthority, spec: dict) -> dict[str, bytes]:
    """The Secret data cert-manager's CA issuer writes for a Certificate SPEC (ECDSA keys only)."""
    assert spec["privateKey"]["algorithm"] == "ECDSA"
    curve = {256: ec.SECP256R1(), 384: ec.SECP384R1()}[spec["privateKey"]["size"]]
    key = ec.generate_private_key(curve)
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in spec.get("subject", {}).get("organizations", [])]
    if "commonName" in spec:
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, spec["commonName"]))
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=hours(spec["duration"])))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature="digital signature" in spec["usages"],
                content_commitment=False,
                key_encipherment="key encipherment" in spec["usages"],
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([USAGES[u] for u in spec["usages"] if u in USAGES]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in spec["dnsNames"]]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.cert.public_key()), critical=False)
    )
    cert = builder.sign(ca.key, hashes.SHA256())
    assert spec["privateKey"]["encoding"] == "PKCS8"
    return {
        "tls.crt": cert.public_bytes(serialization.Encoding.PEM),
        "tls.key": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        "ca.crt": ca.cert.public_bytes(serialization.Encoding.PEM),
    }


def _timestamped_dir(target: Path, files: dict[str, bytes], mode: int) -> Path:
    stamp = target / dt.datetime.now(dt.timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    stamp.mkdir()
    for name, data in files.items():
        (stamp / name).write_bytes(data)
        (stamp / name).chmod(mode)
    return stamp


def mount_secret(target: Path, files: dict[str, bytes], mode: int) -> None:
    """A Secret volume as the kubelet lays it out: NAME -> ..data/NAME -> ..TIMESTAMP/NAME."""
    target.mkdir(parents=True)
    stamp = _timestamped_dir(target, files, mode)
    (target / "..data").symlink_to(stamp.name)
    for name in files:
        (target / name).symlink_to(f"..data/{name}")


def update_secret(target: Path, files: dict[str, bytes], mode: int) -> None:
    """The kubelet's atomic update: a new timestamped dir, then rename a new symlink over ..data."""
    old = (target / "..data").resolve()
    stamp = _timestamped_dir(target, files, mode)
    (target / "..data_tmp").symlink_to(stamp.name)
    os.rename(target / "..data_tmp", target / "..data")
    for child in old.iterdir():
        child.unlink()
    old.rmdir()


def served_certificate(port: int, client: dict[str, bytes], tmp_path: Path) -> x509.Certificate:
    """The certificate the server presents on 127.0.0.1:PORT, handshaking as CLIENT."""
    for name, data in client.items():
        (tmp_path / f"peek-{name}").write_bytes(data)
    context = ssl.create_default_context(cafile=str(tmp_path / "peek-ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(tmp_path / "peek-tls.crt", tmp_path / "peek-tls.key")
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def grpc_probe(port: int, method: str = "/grpc.health.v1.Health/Check") -> tuple[grpc.StatusCode, int | None]:
    """What the kubelet's `grpc:` probe does: plaintext, no client certificate."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        if method == "/grpc.health.v1.Health/Check":
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.RpcError as exc:
                return exc.code(), None
            return grpc.StatusCode.OK, reply.status
        call = channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            call(b"", timeout=5)
        except grpc.RpcError as exc:
            return exc.code(), None
        return grpc.StatusCode.OK, None


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture
def ca(tmp_path: Path, env: dict[str, str]) -> pki.CertificateAuthority:
    """The securechat CA that backs the Issuer (made with `securechat certs init`, as the README says)."""
    # cert-manager's CA Issuer reads the key from a Secret: it cannot be passphrase-encrypted.
    result = run(["securechat", "certs", "init", "--dir", str(tmp_path / "ca"), "--no-passphrase", "--insecure"], env)
    assert result.returncode == 0, result.stderr
    return pki.CertStore(tmp_path / "ca").load_ca()


@pytest.fixture
def pod(tmp_path: Path, ca: pki.CertificateAuthority) -> dict:
    """/etc/securechat inside the pod: the ConfigMap and cert-manager's server Secret, on free ports."""
    root = tmp_path / "etc-securechat"
    container = server_container()
    port, health_port = free_port(), free_port()
    config = resource(KUBERNETES / "configmap.yaml", "ConfigMap", volume("config")["configMap"]["name"])
    text = config["data"]["server.yaml"]
    assert "listen: 0.0.0.0:50051" in text and "health_port: 8081" in text, "update this test"
    text = text.replace("listen: 0.0.0.0:50051", f"listen: 127.0.0.1:{port}")
    text = text.replace("health_port: 8081", f"health_port: {health_port}").replace(ETC, str(root))
    config_dir = root / Path(mount_path(container, "config")).relative_to(ETC)
    config_dir.mkdir(parents=True)
    (config_dir / "server.yaml").write_text(text, encoding="utf-8")

    secret = volume("tls")["secret"]
    assert secret["secretName"] == certificate("server")["spec"]["secretName"]
    mode = secret["defaultMode"]
    tls_dir = root / Path(mount_path(container, "tls")).relative_to(ETC)
    mount_secret(tls_dir, issue_like_cert_manager(ca, certificate("server")["spec"]), mode)
    return {"root": root, "port": port, "health_port": health_port, "tls_dir": tls_dir, "mode": mode}


def pod_argv(root: Path) -> list[str]:
    container = server_container()
    return [arg.replace(ETC, str(root)) for arg in [*container["command"], *container["args"]]]


def client_config(path: Path, secret_dir: Path, port: int, *, server_name: str) -> Path:
    path.write_text(
        f"target: 127.0.0.1:{port}\n"
        "tls:\n"
        f"  ca: {secret_dir}/ca.crt\n"
        f"  cert: {secret_dir}/tls.crt\n"
        f"  key: {secret_dir}/tls.key\n"
        f"  server_name: {server_name}\n",
        encoding="utf-8",
    )
    return path


# -- the tests ----------------------------------------------------------------------


def test_certificates_match_securechat_defaults_and_the_deployment() -> None:
    """cert-manager Certificates: 365 d / renew 30 d, one EKU each, identity in CN and SAN, right Secrets."""
    issuer = resource(CERT_MANAGER / "issuer.yaml", "Issuer")
    service = resource(KUBERNETES / "service.yaml", "Service")
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    for which in ("server", "alice", "probe"):
        spec = certificate(which)["spec"]
        assert spec["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": issuer["metadata"]["name"]}
        assert hours(spec["duration"]) == pki.LEAF_DEFAULT_DAYS * 24 <= pki.LEAF_MAX_DAYS * 24
        assert hours(spec["renewBefore"]) == 30 * 24
        assert spec["privateKey"]["rotationPolicy"] == "Always"
    server = certificate("server")["spec"]
    assert [u for u in server["usages"] if u in USAGES] == ["server auth"]
    for dns in (name, f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"):
        assert dns in server["dnsNames"]
    for client in ("alice", "probe"):
        spec = certificate(client)["spec"]
        assert [u for u in spec["usages"] if u in USAGES] == ["client auth"]
        assert spec["commonName"] == client and spec["dnsNames"] == [client]
        pki.validate_name(client)
    probe_secret = resource(EXEC_PROBE / "deployment-probes.yaml", "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "probe-tls", "secret": {"secretName": certificate("probe")["spec"]["secretName"], "defaultMode": 0o440}} in probe_secret


def test_grace_period_covers_the_servers_grace() -> None:
    """terminationGracePeriodSeconds leaves the server its whole grace_seconds to drain."""
    config = resource(KUBERNETES / "configmap.yaml", "ConfigMap")["data"]["server.yaml"]
    grace = float(re.search(r"^grace_seconds: ([\d.]+)$", config, re.M).group(1))
    assert grace < deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] <= grace + 10


@pytest.mark.slow
def test_pod_serves_mtls_with_cert_manager_files_and_answers_probes(pod, ca, env, start_server, tmp_path) -> None:
    """The container's command, the Secret's tls.crt/tls.key/ca.crt (mode 0440): probes SERVING, alice authenticated."""
    server = start_server(pod_argv(pod["root"]))
    server.wait_for(rf"listening on 127\.0\.0\.1:{pod['port']}\b")
    server.wait_for(rf"health probes .* on 127\.0\.0\.1:{pod['health_port']}\b")

    # The kubelet's gRPC probe: plaintext grpc.health.v1 on health_port.
    status, serving = grpc_probe(pod["health_port"])
    assert (status, serving) == (grpc.StatusCode.OK, health_pb2.HealthCheckResponse.SERVING)
    # Failing twin: that port serves health and nothing else.
    assert grpc_probe(pod["health_port"], "/securechat.v1.ChatService/SayHello")[0] is grpc.StatusCode.UNIMPLEMENTED

    alice_dir = tmp_path / "alice-tls"
    mount_secret(alice_dir, issue_like_cert_manager(ca, certificate("alice")["spec"]), pod["mode"])
    service = resource(KUBERNETES / "service.yaml", "Service")
    dns = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    alice = client_config(tmp_path / "alice.yaml", alice_dir, pod["port"], server_name=dns)
    hello = run(["securechat", "hello", "--config", str(alice)], env)
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout.strip() == "Hello, alice!"

    # Failing twin: "alice" from another CA is refused by the server. Her
    # bundle trusts both CAs, so the refusal is the server's, not a local check.
    stranger_dir = tmp_path / "stranger-tls"
    files = issue_like_cert_manager(pki.create_ca(), certificate("alice")["spec"])
    files["ca.crt"] = (pod["tls_dir"] / "ca.crt").read_bytes() + files["ca.crt"]
    mount_secret(stranger_dir, files, pod["mode"])
    stranger = client_config(tmp_path / "stranger.yaml", stranger_dir, pod["port"], server_name=dns)
    refused = run(["securechat", "hello", "--config", str(stranger)], env)
    assert refused.returncode == 1, refused.stdout
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "refused our certificate" in refused.stderr

    grace = deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert server.terminate(timeout=grace) == 0, server.output


@pytest.mark.slow
def test_exec_probe_component_checks_health_over_mtls(tmp_path, ca, env, start_server) -> None:
    """components/exec-probe: no plaintext port; `securechat health` with the probe Secret says SERVING."""
    root = tmp_path / "etc-securechat"
    port = free_port()
    server_yaml = resource(EXEC_PROBE / "server-config.yaml", "ConfigMap")["data"]["server.yaml"]
    assert "health_port" not in server_yaml
    (root / "config").mkdir(parents=True)
    (root / "config" / "server.yaml").write_text(
        server_yaml.replace("listen: 0.0.0.0:50051", f"listen: 127.0.0.1:{port}").replace(ETC, str(root)),
        encoding="utf-8",
    )
    mount_secret(root / "tls", issue_like_cert_manager(ca, certificate("server")["spec"]), 0o440)
    mount_secret(root / "probe-tls", issue_like_cert_manager(ca, certificate("probe")["spec"]), 0o440)
    probe_yaml = resource(EXEC_PROBE / "probe-config.yaml", "ConfigMap")["data"]["probe.yaml"]
    (root / "probe").mkdir()
    (root / "probe" / "probe.yaml").write_text(
        probe_yaml.replace("127.0.0.1:50051", f"127.0.0.1:{port}").replace(ETC, str(root)), encoding="utf-8"
    )
    server = start_server(pod_argv(root))
    server.wait_for(rf"listening on 127\.0\.0\.1:{port}\b")
    assert "health probes" not in server.output

    patch = resource(EXEC_PROBE / "deployment-probes.yaml", "Deployment")
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        argv = [arg.replace(ETC, str(root)) for arg in container[probe]["exec"]["command"]]
        result = run(argv, env)
        assert result.returncode == 0, f"{probe}: {result.stderr}"

    # Failing twin: once the server is gone the probe fails with one line.
    assert server.terminate() == 0
    down = run(argv, env)
    assert down.returncode == 1
    assert len(down.stderr.strip().splitlines()) == 1, down.stderr


@pytest.mark.slow
def test_secret_update_is_served_without_a_restart(pod, ca, start_server, tmp_path) -> None:
    """The kubelet swaps ..data to a renewed certificate; new handshakes get it, same process."""
    server = start_server(pod_argv(pod["root"]))
    server.wait_for(rf"listening on 127\.0\.0\.1:{pod['port']}\b")
    alice = issue_like_cert_manager(ca, certificate("alice")["spec"])
    before = served_certificate(pod["port"], alice, tmp_path)

    update_secret(pod["tls_dir"], issue_like_cert_manager(ca, certificate("server")["spec"]), pod["mode"])

    deadline = time.monotonic() + 30
    while (after := served_certificate(pod["port"], alice, tmp_path)).serial_number == before.serial_number:
        assert time.monotonic() < deadline, f"still serving serial {before.serial_number:x} after 30 s"
        time.sleep(0.5)
    assert after.serial_number == x509.load_pem_x509_certificate((pod["tls_dir"] / "tls.crt").read_bytes()).serial_number
    assert server.process.poll() is None, "the server restarted instead of reloading"
