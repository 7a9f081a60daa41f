from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollRequest(_message.Message):
    __slots__ = ("token", "csr_pem")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    token: str
    csr_pem: bytes
    def __init__(self, token: _Optional[str] = ..., csr_pem: _Optional[bytes] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem", "current_chain_pem", "signature", "signed_at_unix_ms")
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    CURRENT_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    current_chain_pem: bytes
    signature: bytes
    signed_at_unix_ms: int
    def __init__(self, csr_pem: _Optional[bytes] = ..., current_chain_pem: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., signed_at_unix_ms: _Optional[int] = ...) -> None: ...

class CertificateReply(_message.Message):
    __slots__ = ("certificate_chain_pem", "trust_bundle_pem", "serial", "not_after")
    CERTIFICATE_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    certificate_chain_pem: bytes
    trust_bundle_pem: bytes
    serial: str
    not_after: str
    def __init__(self, certificate_chain_pem: _Optional[bytes] = ..., trust_bundle_pem: _Optional[bytes] = ..., serial: _Optional[str] = ..., not_after: _Optional[str] = ...) -> None: ...

class TrustBundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TrustBundleReply(_message.Message):
    __slots__ = ("trust_bundle_pem",)
    TRUST_BUNDLE_PEM_FIELD_NUMBER: _ClassVar[int]
    trust_bundle_pem: bytes
    def __init__(self, trust_bundle_pem: _Optional[bytes] = ...) -> None: ...
