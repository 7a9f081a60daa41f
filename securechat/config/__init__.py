"""Configs: one YAML reader, and a schema per program -- server, client, broker, the online CA.

    yaml_reader.py  read_yaml (bounded: size, depth, aliases; no duplicate keys),
                    Section (typed accessors), Problems (every problem of a file)
    address.py      HOST:PORT -> Address
    server.py       load_server_config -> ServerConfig (Limits, Keepalive, ServerTls)
    client.py       load_client_config -> ClientConfig (ClientTls)
    broker.py       the `broker:` section -> BrokerConfig (memory | nats)
    renew.py        `tls.renew` and `tls.server_id` (RenewConfig) in server and client configs
    ca.py           the online CA's ca.yaml -> CaConfig (lifetimes, tokens, ports, database)

Schemas are read with the one reader; a config with mistakes raises one `ConfigError` whose `problems` list every
one of them; `str()` is one line per problem. Nothing here reads the
certificate files a config names, opens a socket, or imports the server.
"""

from __future__ import annotations

from securechat.config.address import DEFAULT_PORT, Address, parse_address
from securechat.config.broker import BROKER_KEYS, BrokerConfig, BrokerTls, Retention, load_broker_config, parse_broker
from securechat.config.ca import CaConfig, load_ca_config
from securechat.config.client import CLIENT_KEYS, CLIENT_TLS_KEYS, ClientConfig, ClientTls, load_client_config
from securechat.config.renew import RenewConfig
from securechat.config.server import (
    LOG_FORMATS,
    LOG_LEVELS,
    SERVER_KEYS,
    SERVER_TLS_KEYS,
    Keepalive,
    Limits,
    ServerConfig,
    ServerTls,
    crl_location,
    load_server_config,
)
from securechat.config.yaml_reader import MAX_DEPTH, MAX_NODES, Problems, Section, read_yaml

__all__ = [
    "BROKER_KEYS",
    "CLIENT_KEYS",
    "CLIENT_TLS_KEYS",
    "DEFAULT_PORT",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MAX_DEPTH",
    "MAX_NODES",
    "SERVER_KEYS",
    "SERVER_TLS_KEYS",
    "Address",
    "BrokerConfig",
    "BrokerTls",
    "CaConfig",
    "ClientConfig",
    "ClientTls",
    "Keepalive",
    "Limits",
    "Problems",
    "RenewConfig",
    "Retention",
    "Section",
    "ServerConfig",
    "ServerTls",
    "crl_location",
    "load_broker_config",
    "load_ca_config",
    "load_client_config",
    "load_server_config",
    "parse_address",
    "parse_broker",
    "read_yaml",
]
