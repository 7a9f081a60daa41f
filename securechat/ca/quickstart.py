"""`securechat quickstart --ca-service`: a root + intermediate, the online CA's ca.yaml, and configs that renew.

DIR/certs/ holds root.pem, root-key.pem (move it offline), the issuing
intermediate ca.pem / ca-key.pem, the CA service's own certificate
(ca-service.pem) and short-lived server, alice and bob certificates (as
chains); DIR/ca.yaml runs the CA service on 127.0.0.1:50052 with its
database in DIR/ca.db; DIR/server.yaml, alice.yaml and bob.yaml trust
root.pem and renew from the CA (`tls.renew`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from securechat import pki
from securechat.config import DEFAULT_PORT
from securechat.config.ca import DEFAULT_CA_PORT, DEFAULT_LIFETIME, MIN_LIFETIME, format_duration
from securechat.errors import FileExistsRefused

CLIENTS = ("alice", "bob")
CA_SERVICE_NAME = "ca-service"

CA_YAML = """\
# The online CA (securechat ca serve --config ca.yaml), made by `securechat quickstart --ca-service`.
# Relative paths resolve against this file's directory.
listen: 127.0.0.1:{ca_port}
certs: certs                      # the issuing intermediate (ca.pem, ca-key.pem) and root.pem; crl.pem is written here
tls:                              # the CA service's own server certificate
  cert: certs/{service}.pem
  key: certs/{service}-key.pem
database: ca.db                   # issued certificates, revocations, used tokens (SQLite, WAL)
lifetimes: {{client: {lifetime}, server: {lifetime}}}
{testing}# tokens: {{default_ttl: 15m, max_ttl: 7d}}
# metrics_port: 9465
"""

SERVER_YAML = """\
# securechat server config, made by `securechat quickstart --ca-service`.
listen: 127.0.0.1:{port}
tls:
  cert: certs/server.pem    # the leaf and the intermediate
  key: certs/server-key.pem
  client_ca: certs/root.pem # client certificates must chain to this root
  renew:
    ca: localhost:{ca_port}  # renewed from the CA service at about 2/3 of its lifetime
"""

CLIENT_YAML = """\
# securechat client config for {name}, made by `securechat quickstart --ca-service`.
target: localhost:{port}
tls:
  ca: certs/root.pem
  cert: certs/{name}.pem
  key: certs/{name}-key.pem
  renew:
    ca: localhost:{ca_port}
"""


@dataclass(frozen=True)
class CaQuickstart:
    directory: Path
    certs: Path
    ca_config: Path
    server_config: Path
    client_configs: dict[str, Path]


def make_ca_quickstart(
    directory: Path | str, *, force: bool = False, lifetime: dt.timedelta = DEFAULT_LIFETIME
) -> CaQuickstart:
    """Write the hierarchy, the short-lived leaves and the four configs into DIR."""
    directory = Path(directory)
    configs = {
        "ca": directory / "ca.yaml",
        "server": directory / "server.yaml",
        **{name: directory / f"{name}.yaml" for name in CLIENTS},
    }
    if not force:
        for path in configs.values():
            if path.exists():
                raise FileExistsRefused(path)
    store = pki.CertStore(directory / "certs")
    store.refuse_overwrite([CA_SERVICE_NAME, "server", *CLIENTS], force=force)
    directory.mkdir(parents=True, exist_ok=True)
    store.init_hierarchy(force=force)
    ca = store.load_ca()
    # The CA service's own certificate lives like any server's (a year); the
    # chat server's and the clients' live LIFETIME and renew online.
    service = pki.issue_server_cert(ca, CA_SERVICE_NAME)
    leaves = [
        _short(pki.issue_server_cert, ca, "server", lifetime),
        *(_short(pki.issue_client_cert, ca, name, lifetime) for name in CLIENTS),
    ]
    store.write_leaves([service, *leaves], force=force)
    testing = (
        "testing_short_lifetimes: true   # lifetimes under 5 minutes: for the demo only\n"
        if lifetime < MIN_LIFETIME
        else ""
    )
    _write_text(
        configs["ca"],
        CA_YAML.format(
            ca_port=DEFAULT_CA_PORT, service=CA_SERVICE_NAME, lifetime=format_duration(lifetime), testing=testing
        ),
    )
    _write_text(configs["server"], SERVER_YAML.format(port=DEFAULT_PORT, ca_port=DEFAULT_CA_PORT))
    for name in CLIENTS:
        _write_text(configs[name], CLIENT_YAML.format(name=name, port=DEFAULT_PORT, ca_port=DEFAULT_CA_PORT))
    return CaQuickstart(
        directory=directory,
        certs=store.directory,
        ca_config=configs["ca"],
        server_config=configs["server"],
        client_configs={name: configs[name] for name in CLIENTS},
    )


def _short(issue: object, ca: pki.CertificateAuthority, name: str, lifetime: dt.timedelta) -> pki.IssuedCert:
    validity = pki.lifetime_window(lifetime, ca_not_after=ca.cert.not_valid_after_utc)
    return issue(ca, name, not_before=validity.not_before, not_after=validity.not_after)  # type: ignore[operator,no-any-return]


def _write_text(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.chmod(temp, 0o644)
    os.replace(temp, path)
