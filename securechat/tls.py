"""gRPC credentials from checked TLS material.

The server requires and verifies client certificates when `tls.mtls` is
true (the default) and does server-only TLS when it is false. Plaintext is
never chosen here: the caller asks for it by name (`insecure: true`).
"""

from __future__ import annotations

import grpc

from securechat.material import TlsMaterial


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
