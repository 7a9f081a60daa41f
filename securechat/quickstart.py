"""`securechat quickstart`: a CA, a server, alice and bob, and configs that work as they are."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from securechat import pki
from securechat.config import DEFAULT_PORT
from securechat.errors import ConfigError, FileExistsRefused
from securechat.pki.atomic import ensure_private_directory, write_atomic

CLIENTS = ("alice", "bob")
CONFIG_MODE = 0o644
"""Configs hold paths, not secrets: readable, written by the owner only."""
CONFIG_DIR_MODE = 0o755
"""The directory of the configs: never group- or world-writable, whatever the umask."""

SERVER_YAML = """\
# securechat server config, made by `securechat quickstart`.
# Relative paths resolve against this file's directory.
listen: 127.0.0.1:{port}
tls:
  cert: certs/server.pem
  key: certs/server-key.pem
  client_ca: certs/ca.pem   # client certificates must chain to this CA
  mtls: true                # require and verify client certificates
# authz:
#   allow: [alice, bob]     # only these identities may call; default: any client of the CA
# health_port: 8081         # grpc.health.v1 only, plaintext, for probes
"""

CLIENT_YAML = """\
# securechat client config for {name}, made by `securechat quickstart`.
# Relative paths resolve against this file's directory.
target: localhost:{port}
tls:
  ca: certs/ca.pem          # the CA that signed the server's certificate
  cert: certs/{name}.pem    # our identity: {name}
  key: certs/{name}-key.pem
"""


@dataclass(frozen=True)
class Quickstart:
    directory: Path
    certs: Path
    server_config: Path
    client_configs: dict[str, Path]


def make_quickstart(directory: Path | str, *, force: bool = False, port: int = DEFAULT_PORT) -> Quickstart:
    """Issue the CA and certificates into DIR/certs and write DIR/*.yaml, the server on 127.0.0.1:PORT."""
    if not 1 <= port <= 65535:
        raise ConfigError("--port", None, f"{port} is not a TCP port.", "Use 1-65535 (50051 is the default).")
    directory = Path(directory)
    configs = {"server": directory / "server.yaml", **{name: directory / f"{name}.yaml" for name in CLIENTS}}
    if not force:
        for path in configs.values():
            if os.path.lexists(path):  # a dangling symlink is in the way too
                raise FileExistsRefused(path)
    store = pki.CertStore(directory / "certs")
    store.refuse_overwrite(["server", *CLIENTS], force=force)
    # Exact modes whatever the umask: DIR 0755 (configs name paths, no secrets;
    # a server running as another user can read them), DIR/certs 0700.
    ensure_private_directory(directory, mode=CONFIG_DIR_MODE)
    ca = store.init_ca(force=force)
    store.write_leaves(
        [pki.issue_server_cert(ca, "server"), *(pki.issue_client_cert(ca, name) for name in CLIENTS)],
        force=force,
    )
    _write_text(configs["server"], SERVER_YAML.format(port=port), force=force)
    for name in CLIENTS:
        _write_text(configs[name], CLIENT_YAML.format(name=name, port=port), force=force)
    return Quickstart(
        directory=directory,
        certs=store.directory,
        server_config=configs["server"],
        client_configs={name: configs[name] for name in CLIENTS},
    )


def _write_text(path: Path, text: str, *, force: bool) -> None:
    # A fresh O_EXCL|O_NOFOLLOW temp file, then a rename or no-clobber link:
    # a name planted in DIR (say a .alice.yaml.tmp symlink) is never followed.
    write_atomic(path, text.encode(), CONFIG_MODE, replace_existing=force)
