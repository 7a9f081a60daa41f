"""Where things live in a certs directory, and with which file modes.

    ca.pem  ca-key.pem     the issuing CA (key 0400): a flat CA, or the
                           intermediate of a hierarchy
    root.pem root-key.pem  a hierarchy's root (`init_hierarchy`); the root
                           key signs only intermediates, so it may be moved
                           offline once the intermediate exists
    NAME.pem NAME-key.pem  each leaf (cert 0644, key 0600); under an
                           intermediate NAME.pem is the chain: the leaf,
                           then the intermediate
    index.json             what was issued (0644), see `index.py`
    crl.pem                the revocation list (0644)

DIR itself is 0700. `CertsLayout` only computes paths and reads modes; it
never creates or writes anything (`store.py` and `atomic.py` do).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from securechat.pki.names import validate_name

DIR_MODE = 0o700
CERT_MODE = 0o644
KEY_MODE = 0o600
CA_KEY_MODE = 0o400
"""Read-only even for the owner, like mkcert: replacing it takes --force."""

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
ROOT_CERT_FILE = "root.pem"
ROOT_KEY_FILE = "root-key.pem"
INDEX_FILE = "index.json"
CRL_FILE = "crl.pem"


def leaf_file_names(name: str) -> tuple[str, str]:
    """NAME's certificate and key file names in DIR: NAME.pem and NAME-key.pem."""
    validate_name(name)
    return f"{name}.pem", f"{name}-key.pem"


@dataclass(frozen=True)
class CertsLayout:
    """The paths of a certs directory. Making one touches nothing on disk."""

    directory: Path

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "directory", Path(directory))

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / CA_CERT_FILE

    @property
    def ca_key_path(self) -> Path:
        return self.directory / CA_KEY_FILE

    @property
    def root_cert_path(self) -> Path:
        return self.directory / ROOT_CERT_FILE

    @property
    def root_key_path(self) -> Path:
        return self.directory / ROOT_KEY_FILE

    @property
    def has_hierarchy(self) -> bool:
        """True if DIR holds a root (root.pem): ca.pem is then its intermediate."""
        return self.root_cert_path.is_file()

    @property
    def trust_anchor_path(self) -> Path:
        """What servers and clients should trust: root.pem in a hierarchy, else ca.pem."""
        return self.root_cert_path if self.has_hierarchy else self.ca_cert_path

    @property
    def index_path(self) -> Path:
        return self.directory / INDEX_FILE

    @property
    def crl_path(self) -> Path:
        return self.directory / CRL_FILE

    def cert_path(self, name: str) -> Path:
        return self.directory / leaf_file_names(name)[0]

    def key_path(self, name: str) -> Path:
        return self.directory / leaf_file_names(name)[1]

    def directory_is_private(self) -> bool:
        """False if DIR exists and group or others may enter or read it."""
        try:
            mode = self.directory.stat().st_mode
        except FileNotFoundError:
            return True
        return stat.S_IMODE(mode) & 0o077 == 0
