"""The client config: YAML -> a frozen ClientConfig, every problem of the file reported at once.

`load_client_config(path)` reads the file with the one YAML reader: the
server's address (`target`), the CA that signed the server certificate, our
own certificate and key (or neither, for server-only TLS), and an optional
server-name override. Plaintext needs an explicit `insecure: true`. The
files named are read when the channel opens, not here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from securechat.config.address import DEFAULT_PORT, Address
from securechat.config.renew import RenewConfig, parse_renew, parse_server_id
from securechat.config.yaml_reader import Problems, Section, config_source, flag_address, read_yaml

CLIENT_KEYS = ("target", "tls", "insecure")
CLIENT_TLS_KEYS = ("ca", "cert", "key", "server_name", "renew", "server_id")


@dataclass(frozen=True)
class ClientTls:
    ca: Path
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    renew: RenewConfig | None = None
    """`tls.renew`: renew cert/key from the online CA (securechat.config.renew.RenewConfig)."""
    server_id: str | None = None
    """`tls.server_id`: a DNS name or SPIFFE ID the server's certificate must carry."""


@dataclass(frozen=True)
class ClientConfig:
    source: Path
    target: Address
    tls: ClientTls | None
    insecure: bool = False


# Keys written at the top level that belong in `tls:`: the error names where they go.
_IN_TLS = {key: f"tls.{key}" for key in ("ca", "cert", "key", "server_name", "server_id", "renew")}


def load_client_config(path: str | os.PathLike[str], *, target: str | None = None) -> ClientConfig:
    """Read and check a client YAML file; `target` overrides its target address.

    Raises ConfigError carrying every problem found in the file.
    """
    source = config_source(path)
    problems = Problems(source)
    root = Section(problems, read_yaml(source), "", CLIENT_KEYS, nested=_IN_TLS)
    if target is None:
        address = root.address("target", None)
        if address is None and not root.has("target"):
            root.missing("target", "missing.", f"Set target to the server's HOST:PORT, e.g. localhost:{DEFAULT_PORT}.")
    else:
        address = flag_address(problems, "--target", target)
    insecure = root.boolean("insecure", False)
    tls = _client_tls(root, insecure)
    problems.raise_if_any()
    assert address is not None  # a missing or bad target is a problem raised above
    return ClientConfig(source=source, target=address, tls=tls, insecure=insecure)


def _client_tls(root: Section, insecure: bool) -> ClientTls | None:
    if insecure:
        if root.has("tls"):
            root.problem(
                "insecure",
                "is true but a tls section is configured too.",
                "Remove one: the client speaks either TLS or, when asked by name, plaintext.",
            )
        return None
    if not root.has("tls"):
        root.missing(
            "tls",
            "missing: securechat will not connect in plaintext unless asked.",
            "Add tls: {ca, cert, key}, or set insecure: true for a loopback-only test.",
        )
        return None
    section = root.section("tls", CLIENT_TLS_KEYS)
    if not section.has("ca"):
        section.missing(
            "ca",
            "missing: the client cannot verify the server without it.",
            "Set tls.ca to the CA that signed the server certificate (e.g. certs/ca.pem).",
        )
    if section.has("cert") != section.has("key"):
        present, absent = ("cert", "key") if section.has("cert") else ("key", "cert")
        section.missing(
            absent,
            f"missing while tls.{present} is set.",
            "Give both tls.cert and tls.key, or neither for server-only TLS.",
        )
    ca = section.path("ca")
    cert, key = section.path("cert"), section.path("key")
    server_name = section.string("server_name")
    renew = parse_renew(section, default_ca_cert=ca, ca_cert_field="tls.ca")
    if section.has("renew") and not section.has("cert"):
        section.problem(
            "renew",
            "is set but tls.cert and tls.key are not: there is nothing to renew.",
            "Add tls.cert and tls.key, or remove tls.renew.",
        )
    server_id = parse_server_id(section)
    if ca is None:
        return None
    return ClientTls(ca=ca, cert=cert, key=key, server_name=server_name, renew=renew, server_id=server_id)
