"""`securechat certs k8s-secret`: a kubernetes.io/tls Secret the server can load as it is."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import yaml

from securechat import pki
from securechat.config import load_server_config
from securechat.tls.material import load_server_material


def k8s_secret(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "securechat", "certs", "k8s-secret", *args],
        cwd=cwd, capture_output=True, text=True, timeout=30, check=False,
    )


def test_secret_holds_the_cert_manager_file_names_and_loads(deployment):
    """The Secret's tls.crt/tls.key/ca.crt, written out like a Secret volume, pass the server's checks."""
    done = k8s_secret("server", "--dir", "certs", "--namespace", "chat", cwd=deployment.root)
    assert done.returncode == 0, done.stderr
    secret = yaml.safe_load(done.stdout)
    assert secret["apiVersion"] == "v1"
    assert secret["kind"] == "Secret"
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"] == {"name": "securechat-server-tls", "namespace": "chat"}
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    mounted = deployment.root / "mounted"
    mounted.mkdir()
    for file, value in secret["data"].items():
        (mounted / file).write_bytes(base64.b64decode(value))
    os.chmod(mounted / "tls.key", 0o600)
    config = deployment.server_yaml(tls={"cert": "mounted/tls.crt", "key": "mounted/tls.key", "client_ca": "mounted/ca.crt"})
    material = load_server_material(load_server_config(config))
    assert material is not None
    assert material.certificate == pki.load_certificate(deployment.store.cert_path("server"))


def test_secret_for_a_missing_name_is_one_line(deployment):
    """No such certificate: exit 1, one line naming the file, nothing on stdout."""
    done = k8s_secret("carol", "--dir", "certs", cwd=deployment.root)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ") and "carol.pem" in lines[0]
