"""HOST:PORT addresses in configs and flags (`listen`, `target`, `--listen`, `--target`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class Address:
    """A HOST:PORT pair; IPv6 hosts are written in brackets: [::1]:50051."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _quoted(text: str) -> str:
    # One printable line whatever was given: repr() for newlines and escapes.
    return f"'{text}'" if text.isprintable() and len(text) <= 80 else repr(text)[:80]


def parse_address(text: str) -> Address:
    """Parse HOST:PORT (IPv6 as [::1]:PORT); raise ValueError with the fix."""
    shown = _quoted(text)
    hint = "Write it as HOST:PORT, e.g. 127.0.0.1:50051 or [::1]:50051."
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"{shown} is not HOST:PORT. {hint}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{shown} has an IPv6 host without brackets. {hint}")
    if not host:
        raise ValueError(f"{shown} has an empty host. {hint}")
    # Digits counted before int(): a 5,000-digit port would be a ValueError of int()'s own.
    if len(port_text.lstrip("0")) > 5 or int(port_text) > 65535:
        port_shown = port_text if len(port_text) <= 12 else f"{port_text[:12]}..."
        raise ValueError(f"port {port_shown} in {shown} is out of range; use 0 to 65535.")
    return Address(host, int(port_text))
