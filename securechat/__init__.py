"""securechat: a private CA, an mTLS grpc.aio chat server, and its client.

The public API, importable from here (everything else is internal):

- clients: `open_channel`, `open_chat`, `reconnecting_chat`, `rotating_channel`;
- server: `start_server` (-> `RunningServer`);
- configs: `load_server_config`, `load_client_config`;
- the wire contract: `Reason`, `Refusal` (see `securechat.protocol`);
- the error tree, drawn in `securechat.errors`: `SecureChatError` and below.

Names are loaded on first use (PEP 562), so `import securechat` stays cheap
for the CLI: grpc and the server load only when they are asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from securechat.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    ConfigProblem,
    ConnectError,
    FileExistsRefused,
    InputFileError,
    OutOfRange,
    PkiError,
    SecureChatError,
)

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "open_channel": "securechat.client",
    "open_chat": "securechat.client",
    "reconnecting_chat": "securechat.client",
    "rotating_channel": "securechat.client",
    "start_server": "securechat.server.app",
    "RunningServer": "securechat.server.app",
    "load_server_config": "securechat.config",
    "load_client_config": "securechat.config",
    "Reason": "securechat.protocol",
    "Refusal": "securechat.protocol",
}

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ConfigError",
    "ConfigProblem",
    "ConnectError",
    "FileExistsRefused",
    "InputFileError",
    "OutOfRange",
    "PkiError",
    "Reason",
    "Refusal",
    "RunningServer",
    "SecureChatError",
    "__version__",
    "load_client_config",
    "load_server_config",
    "open_channel",
    "open_chat",
    "reconnecting_chat",
    "rotating_channel",
    "start_server",
]

if TYPE_CHECKING:
    from securechat.client import open_channel, open_chat, reconnecting_chat, rotating_channel
    from securechat.config import load_client_config, load_server_config
    from securechat.protocol import Reason, Refusal
    from securechat.server.app import RunningServer, start_server


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'securechat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value
