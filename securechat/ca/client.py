"""The requester's side of the online CA: make a key and a CSR, enrol, renew, fetch the trust bundle.

    async with CaClient(CaTarget("ca.internal:50052", trust_pem)) as ca:
        issued = await ca.enroll(token, name="alice", key=key)
        renewed = await ca.renew(chain_pem=issued.chain_pem, key=key, new_key=new_key)

The private key never leaves this process: the CA gets a CSR. A renewal
proves the current key by signing the CSR and the time (see ca.proto) and,
for client certificates, also presents the certificate in the TLS
handshake, which an mTLS port of the CA (`mtls_listen`) verifies.

Failures are `CaError`: one line for a person, plus `reason` (the CA's
`securechat-refusal`, or "unreachable") and `retryable` for code, which
acts on those and never on the text.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securechat import pki
from securechat._gen import ca_pb2, ca_pb2_grpc
from securechat.ca.policy import proof_message, sign_proof
from securechat.errors import FileExistsRefused, SecureChatError
from securechat.pki.keys import signature_hash
from securechat.protocol import REFUSAL_KEY
from securechat.tls import checks

DEFAULT_TIMEOUT = 10.0
UNREACHABLE = "unreachable"
UNTRUSTED_CA = "untrusted-ca"
RETRYABLE_REASONS = frozenset({UNREACHABLE, "ca-unavailable", "timeout"})


class CaError(SecureChatError):
    """The CA service could not be reached, or refused; `reason` says which, for code."""

    def __init__(self, message: str, *, reason: str, code: grpc.StatusCode | None = None) -> None:
        self.reason = reason
        self.code = code
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        """True when trying again later may work (the CA is down or busy), False for a refusal."""
        return self.reason in RETRYABLE_REASONS


@dataclass(frozen=True)
class CaTarget:
    """Where the CA service is and what to trust for its TLS certificate."""

    address: str
    trust_pem: bytes
    server_name: str | None = None


@dataclass(frozen=True)
class Issued:
    """What the CA returned: the chain (leaf first), the trust anchors, the serial and expiry."""

    chain_pem: bytes
    trust_bundle_pem: bytes
    serial: str
    not_after: dt.datetime

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]


def make_csr(key: pki.PrivateKey, name: str) -> bytes:
    """A PKCS#10 CSR for NAME (CN only: the CA decides the SANs from the token or the current certificate)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    )
    csr = builder.sign(key, signature_hash(key))
    return csr.public_bytes(serialization.Encoding.PEM)


class CaClient:
    """One channel to the CA service, reused for every call (persistent connection)."""

    def __init__(self, target: CaTarget, *, identity: tuple[bytes, bytes] | None = None) -> None:
        """IDENTITY (chain PEM, key PEM), when given, is presented in the TLS handshake (for an mTLS port)."""
        self.target = target
        options: list[tuple[str, str | int]] = [("grpc.enable_retries", 0)]
        if target.server_name:
            options.append(("grpc.ssl_target_name_override", target.server_name))
        if identity is None:
            credentials = grpc.ssl_channel_credentials(root_certificates=target.trust_pem)
        else:
            chain_pem, key_pem = identity
            credentials = grpc.ssl_channel_credentials(
                root_certificates=target.trust_pem, private_key=key_pem, certificate_chain=chain_pem
            )
        self._channel = grpc.aio.secure_channel(target.address, credentials, options=options)
        self._stub = ca_pb2_grpc.CertificateAuthorityStub(self._channel)  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> CaClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def enroll(self, token: str, *, name: str, key: pki.PrivateKey, timeout: float = DEFAULT_TIMEOUT) -> Issued:
        request = ca_pb2.EnrollRequest(token=token.strip(), csr_pem=make_csr(key, name))
        return _issued(await self._call(self._stub.Enroll, request, timeout, "enrol"))

    async def renew_over_mtls(self, *, name: str, new_key: pki.PrivateKey, timeout: float = DEFAULT_TIMEOUT) -> Issued:
        """Renew the certificate this client presented in the handshake (an mTLS port: `mtls_listen`)."""
        request = ca_pb2.RenewRequest(csr_pem=make_csr(new_key, name))
        return _issued(await self._call(self._stub.Renew, request, timeout, "renew"))

    async def renew(
        self, *, chain_pem: bytes, key: pki.PrivateKey, new_key: pki.PrivateKey, timeout: float = DEFAULT_TIMEOUT
    ) -> Issued:
        """A new certificate for NEW_KEY with the identity of CHAIN_PEM's leaf, proven by KEY."""
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        name = _common_name(leaf)
        csr_pem = make_csr(new_key, name)
        csr_der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
        signed_at = int(time.time() * 1000)
        request = ca_pb2.RenewRequest(
            csr_pem=csr_pem,
            current_chain_pem=chain_pem,
            signature=sign_proof(key, proof_message(csr_der, signed_at)),
            signed_at_unix_ms=signed_at,
        )
        return _issued(await self._call(self._stub.Renew, request, timeout, "renew"))

    async def trust_bundle(self, *, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        reply = await self._call(
            self._stub.TrustBundle, ca_pb2.TrustBundleRequest(), timeout, "fetch the trust bundle from"
        )
        return bytes(reply.trust_bundle_pem)

    async def _call(self, method: object, request: object, timeout: float, what: str) -> ca_pb2.CertificateReply:
        try:
            return await method(request, timeout=timeout)  # type: ignore[operator,no-any-return]
        except grpc.aio.AioRpcError as exc:
            raise explain(exc, self.target.address, what) from exc


def presents_client_certificate(leaf: x509.Certificate) -> bool:
    """A certificate with clientAuth can be shown in the handshake; a serverAuth-only one would be refused."""
    return ExtendedKeyUsageOID.CLIENT_AUTH in checks.extended_key_usages(leaf)


def explain(error: grpc.aio.AioRpcError, address: str, what: str) -> CaError:
    """One line for a failed call to the CA service, and its reason."""
    code = error.code()
    details = error.details() or ""
    reason = next((str(v) for k, v in (error.trailing_metadata() or ()) if k == REFUSAL_KEY), None)
    if reason is not None:
        return CaError(f"the CA at {address} refused to {what}: {details}", reason=reason, code=code)
    if code is grpc.StatusCode.UNAVAILABLE:
        if "CERTIFICATE_VERIFY_FAILED" in details or "Hostname Verification" in details or "Peer name" in details:
            return CaError(
                f"cannot trust the CA service at {address}: its certificate does not verify against the trust anchor"
                " given (--ca-cert / tls.renew.ca_cert) or does not cover that host name. Use the CA's root.pem.",
                reason=UNTRUSTED_CA,
                code=code,
            )
        last = details.rsplit("last error: ", 1)[-1].split(": ", 2)[-1].strip() or "no answer"
        return CaError(
            f"CA service not reachable at {address}: {last}. Is it running ('securechat ca serve --config ca.yaml')"
            " and is the address right?",
            reason=UNREACHABLE,
            code=code,
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return CaError(f"the CA service at {address} did not answer in time.", reason="timeout", code=code)
    return CaError(f"the CA at {address} could not {what}: {code.name}: {details}", reason=code.name.lower(), code=code)


def _issued(reply: ca_pb2.CertificateReply) -> Issued:
    return Issued(
        chain_pem=bytes(reply.certificate_chain_pem),
        trust_bundle_pem=bytes(reply.trust_bundle_pem),
        serial=reply.serial,
        not_after=dt.datetime.fromisoformat(reply.not_after.replace("Z", "+00:00")),
    )


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


@dataclass(frozen=True)
class CredentialFiles:
    """Where a certificate, its key and the trust anchors live."""

    cert: Path
    key: Path
    anchors: Path | None = None

    @classmethod
    def in_directory(cls, directory: Path, name: str) -> CredentialFiles:
        pki.validate_name(name)
        return cls(cert=directory / f"{name}.pem", key=directory / f"{name}-key.pem", anchors=directory / "root.pem")


def write_credentials(files: CredentialFiles, key: pki.PrivateKey, issued: Issued, *, force: bool = False) -> None:
    """Write the key (0600), the chain and the trust anchors atomically; refuse to replace unless FORCE.

    The trust anchor file is written when missing or when it holds the same
    anchors; a different one is replaced only with FORCE.
    """
    writes: list[tuple[Path, bytes, int]] = [
        (files.key, pki.private_key_pem(key), pki.KEY_MODE),
        (files.cert, issued.chain_pem, pki.CERT_MODE),
    ]
    if not force:
        for path in (files.cert, files.key):
            if os.path.lexists(path):
                raise FileExistsRefused(path)
    if files.anchors is not None and issued.trust_bundle_pem:
        current = files.anchors.read_bytes() if files.anchors.is_file() else None
        if current != issued.trust_bundle_pem:
            if current is not None and not force:
                raise FileExistsRefused(files.anchors)
            writes.append((files.anchors, issued.trust_bundle_pem, pki.CERT_MODE))
    for directory in {path.parent for path, _, _ in writes}:
        if not directory.exists():
            directory.mkdir(parents=True, mode=pki.DIR_MODE)
            os.chmod(directory, pki.DIR_MODE)
    pki.replace_files(writes)
