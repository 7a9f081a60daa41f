"""deploy/cluster: 3 securechat replicas + the 3-node NATS JetStream cluster (Compose and Kubernetes)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from deploy_support import DEPLOY, ETC, load_yaml_documents, run

from securechat import pki
from securechat.config import load_server_config

CLUSTER = DEPLOY / "cluster"


def compose_services() -> dict:
    (compose,) = load_yaml_documents(CLUSTER / "compose.yaml")
    return compose["services"]


def test_compose_certs_issue_everything_and_each_replica_config_loads(tmp_path: Path, env: dict[str, str]) -> None:
    """The certs one-shot runs for real; route.pem is a peer certificate; each replica's config loads with its own NATS client cert."""
    etc, nats_tls = tmp_path / "etc-securechat", tmp_path / "nats-tls"
    (etc / "certs").mkdir(parents=True, mode=0o700)
    nats_tls.mkdir(mode=0o700)
    service = compose_services()["certs"]
    (script,) = service["command"]
    script = script.replace("$$", "$").replace(f"{ETC}/certs", str(etc / "certs")).replace("/etc/nats/tls", str(nats_tls))
    result = run([*service["entrypoint"], script], env, timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {p.name for p in nats_tls.iterdir()} == {"ca.pem", "nats.pem", "nats-key.pem", "route.pem", "route-key.pem"}
    route = x509.load_pem_x509_certificate((nats_tls / "route.pem").read_bytes())
    assert set(pki.extended_key_usages(route)) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    for replica in ("a", "b", "c"):
        shutil.copy(CLUSTER / f"replica-{replica}.yaml", etc / "server.yaml")
        config = load_server_config(etc / "server.yaml")
        assert config.broker is not None and config.broker.type == "nats" and config.broker.replicas == 3
        assert config.broker.tls is not None and config.broker.tls.cert.name == f"replica-{replica}.pem"
        assert config.broker.tls.cert.is_file() and config.broker.tls.key.is_file()
    again = run([*service["entrypoint"], script], env)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_compose_runs_three_replicas_after_a_healthy_nats_cluster() -> None:
    """Three replica services, each its own config, each waiting for all three NATS nodes."""
    services = compose_services()
    replicas = [name for name in services if name.startswith("replica-")]
    assert replicas == ["replica-a", "replica-b", "replica-c"]
    for name in replicas:
        assert set(services[name]["depends_on"]) == {"nats-0", "nats-1", "nats-2"}
        assert f"./{name}.yaml:{ETC}/server.yaml:ro" in services[name]["volumes"]


@pytest.fixture(scope="module")
def built() -> list[dict]:
    kubectl = shutil.which("kustomize") or shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("neither kustomize nor kubectl on PATH")
    argv = [kubectl, "build"] if kubectl.endswith("kustomize") else [kubectl, "kustomize"]
    done = subprocess.run([*argv, str(CLUSTER / "kubernetes")], capture_output=True, text=True, timeout=60, check=True)
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_kubernetes_three_replicas_with_a_min_available_budget(built: list[dict]) -> None:
    """Deployment scaled to 3 with rolling updates; PDB minAvailable 2; the NATS StatefulSet of 3 alongside."""
    deployment = find(built, "Deployment", "securechat")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pdb = find(built, "PodDisruptionBudget", "securechat")["spec"]
    assert pdb["minAvailable"] == 2 and "maxUnavailable" not in pdb
    assert find(built, "StatefulSet", "nats")["spec"]["replicas"] == 3


def test_kubernetes_config_points_at_the_mounted_nats_client_cert(built: list[dict], tmp_path: Path) -> None:
    """server.yaml's broker section loads, names all three NATS nodes over tls://, and its files are where the Secret is mounted."""
    text = find(built, "ConfigMap", next(d["metadata"]["name"] for d in built if d["kind"] == "ConfigMap" and "server" in d["metadata"]["name"]))
    path = tmp_path / "server.yaml"
    path.write_text(text["data"]["server.yaml"], encoding="utf-8")
    broker = load_server_config(path).broker
    assert broker is not None and broker.servers == tuple(f"tls://nats-{n}.nats:4222" for n in range(3))
    pod = find(built, "Deployment", "securechat")["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "nats-tls")
    assert broker.tls is not None and all(str(p).startswith(mount["mountPath"] + "/") for p in (broker.tls.ca, broker.tls.cert, broker.tls.key))
    volume = next(v for v in pod["volumes"] if v["name"] == "nats-tls")
    assert volume["secret"]["secretName"] == "securechat-nats-client"


def test_kubernetes_network_policy_lets_replicas_reach_nats_only(built: list[dict]) -> None:
    """Egress: NATS client port on the nats pods, and DNS; nothing else."""
    egress = find(built, "NetworkPolicy", "securechat")["spec"]["egress"]
    assert egress[0]["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "nats"}}}]
    assert egress[0]["ports"] == [{"port": 4222, "protocol": "TCP"}]
    assert {p["port"] for p in egress[1]["ports"]} == {53}
    assert len(egress) == 2
