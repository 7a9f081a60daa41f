"""securechat: a private CA, an mTLS grpc.aio chat server, and its client."""

from __future__ import annotations

from securechat.errors import (
    ConfigError,
    ConfigProblem,
    ConnectError,
    FileExistsRefused,
    InputFileError,
    PkiError,
    SecureChatError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "ConnectError",
    "FileExistsRefused",
    "InputFileError",
    "PkiError",
    "SecureChatError",
    "__version__",
]
