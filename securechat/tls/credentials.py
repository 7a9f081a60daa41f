"""gRPC credentials from checked TLS material.

The server requires and verifies client certificates when `tls.mtls` is
true (the default) and does server-only TLS when it is false. Plaintext is
never chosen here: the caller asks for it by name (`insecure: true`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import grpc

from securechat.tls.material import TlsMaterial


def server_credentials(material: TlsMaterial, *, mtls: bool) -> grpc.ServerCredentials:
    assert material.private_key is not None and material.cert_chain is not None
    return grpc.ssl_server_credentials(
        [(material.private_key, material.cert_chain)],
        root_certificates=material.ca_bundle if mtls else None,
        require_client_auth=mtls,
    )


def channel_credentials(material: TlsMaterial) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=material.ca_bundle,
        private_key=material.private_key,
        certificate_chain=material.cert_chain,
    )


def server_certificate_configuration(material: TlsMaterial, *, mtls: bool) -> grpc.ServerCertificateConfiguration:
    """The checked material as one ready object for `dynamic_server_credentials`' fetcher."""
    assert material.private_key is not None and material.cert_chain is not None
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key, material.cert_chain)],
        root_certificates=material.ca_bundle if mtls else None,
    )


def dynamic_server_credentials(
    initial: grpc.ServerCertificateConfiguration,
    fetch: Callable[[], grpc.ServerCertificateConfiguration | None],
    *,
    mtls: bool,
) -> grpc.ServerCredentials:
    """Credentials whose certificate, key and client CA can change while serving.

    gRPC calls FETCH on a core thread before each new handshake; it returns a
    new configuration once after a change and None otherwise (None keeps the
    current one; returning the same object every time would rebuild the TLS
    context for every connection).
    """
    # grpc's stubs type the fetcher as never returning None, but its docs (and core) take None as "no change".
    fetcher = cast("Callable[[], grpc.ServerCertificateConfiguration]", fetch)
    return grpc.dynamic_ssl_server_credentials(initial, fetcher, require_client_authentication=mtls)
