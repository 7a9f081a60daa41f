"""The online CA's decisions and records, apart from gRPC: enrol, renew, revoke, mint tokens.

`OnlineCa(config)` loads the issuing CA from the certs directory (ca.pem,
ca-key.pem; root.pem as the trust anchor in a hierarchy, else ca.pem
itself), opens the database and imports index.json. Each request is
checked on the caller's side (CSR, chain, proof) and then decided and
recorded in one database job (`database.CaDatabase`), whose result is
only handed back once committed. The gRPC servicer (`service.py`) and the
CLI (`securechat ca token|revoke`) call this; nothing here prints.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from securechat import pki
from securechat.ca import audit
from securechat.ca.database import CaDatabase, CertRecord, TokenRecord, Transaction
from securechat.ca.metrics import CaMetrics
from securechat.ca.policy import (
    MAX_CACHED_VERDICTS,
    ChainVerdicts,
    CsrRequest,
    check_enrolment,
    parse_csr,
    presented_name,
    spki_fingerprint,
    verify_renewal_proof,
)
from securechat.ca.refusals import CaRefusal, RefusalReason
from securechat.ca.tokens import TokenGrant, grant_for, mint_token, san_from_text, token_hash
from securechat.config.ca import CaConfig, format_duration
from securechat.errors import ConfigError, PkiError, SecureChatError
from securechat.tls import checks
from securechat.tls.revocation import CrlFileError, load_crls, read_crl_file

log = logging.getLogger(__name__)

NEXT_ANCHORS_FILE = "root-next.pem"
"""During a root rollover: the next trust anchors, served by TrustBundle beside the current ones."""
BUNDLE_RECHECK_SECONDS = 1.0


@dataclass(frozen=True)
class _LeafFacts:
    serial: str
    identity: str
    spki_sha256: str
    carried: tuple[str, str, tuple[str, ...]] | None


@dataclass(frozen=True)
class RenewalRequest:
    """A Renew whose presented certificate, CSR and proof are checked; the database decides the rest."""

    request: CsrRequest
    serial: str
    identity: str
    spki_sha256: str
    carried: tuple[str, str, tuple[str, ...]] | None = None
    """(name, kind, SANs as the database writes them) the presented certificate carries, if it names one."""


@dataclass(frozen=True)
class Issuance:
    """A certificate the CA issued (and recorded) for a request."""

    record: CertRecord
    chain_pem: bytes
    replayed: bool = False
    """True when a repeated Enroll (same token, same key) got the recorded certificate back."""


class OnlineCa:
    """The issuing CA, its trust anchors, its database, its metrics."""

    def __init__(self, config: CaConfig, *, metrics: CaMetrics | None = None, passphrase: bytes | None = None) -> None:
        self.config = config
        self.store = pki.CertStore(config.certs)
        if passphrase is None and config.ca_passphrase_file is not None:
            passphrase = _read_first_line(config, config.ca_passphrase_file)
        try:
            self.ca = self.store.load_ca(passphrase=passphrase)
            self.anchors = pki.load_certificates(self.store.trust_anchor_path)
        except PkiError as exc:
            raise ConfigError(config.source.name, "certs", str(exc)) from exc
        self._anchors_pem = b"".join(pki.certificate_pem(c) for c in self.anchors)
        self._chain_tail_pem = b"".join(pki.certificate_pem(c) for c in self.ca.leaf_chain)
        self._bundle: tuple[float, bytes] | None = None
        self.metrics = metrics or CaMetrics()
        self.metrics.watch_certificates(self.ca.cert, self.anchors)
        self.issuer = self.ca.cert.subject.rfc4514_string()
        self.verdicts = ChainVerdicts(self.anchors, self.ca.leaf_chain, anchors_where=str(self.store.trust_anchor_path))
        self._crl_state: tuple[tuple[int, int, int], checks.RevocationIndex] | None = None
        self._crl_path = self.store.crl_path
        self._crl_key = checks.key_id(self.ca.cert)
        self._crl_high: int | None = None
        """The highest cRLNumber this CA published, as last read from (or written to) the database."""
        self._leaf_facts: OrderedDict[bytes, _LeafFacts] = OrderedDict()
        self.db = CaDatabase(config.database)
        self._signer = pki.LeafSigner(self.ca)
        """Signs every certificate this CA issues, with what is per CA made once."""
        self._crl_high = self.db.run(lambda tx: tx.crl_number(self._crl_key))
        imported = self.import_index()
        if imported:
            log.info("imported %d certificate(s) from %s", imported, self.store.index_path)

    def close(self) -> None:
        self.db.close()

    # -- what clients should trust -------------------------------------------

    def trust_bundle_pem(self) -> bytes:
        """The current trust anchors, then the next ones during a rollover (certs/root-next.pem).

        The file is looked at once a second at most: every reply carries the
        bundle, and a rollover is announced days ahead, not milliseconds.
        """
        now = time.monotonic()
        if self._bundle is not None and now - self._bundle[0] < BUNDLE_RECHECK_SECONDS:
            return self._bundle[1]
        upcoming = self.store.directory / NEXT_ANCHORS_FILE
        bundle = self._anchors_pem
        if upcoming.is_file():
            pems = [pki.certificate_pem(c) for c in pki.load_certificates(upcoming) if c not in self.anchors]
            bundle += b"".join(pems)
        self._bundle = (now, bundle)
        return bundle

    # -- tokens --------------------------------------------------------------

    def mint_token(
        self, name: str, *, kind: pki.LeafKind, sans: tuple[str, ...] = (), ttl: dt.timedelta | None = None
    ) -> tuple[str, TokenGrant]:
        """A new single-use token for NAME (stored as its hash); PkiError for bad names or TTL."""
        ttl = ttl or self.config.tokens.default_ttl
        if not dt.timedelta(seconds=1) <= ttl <= self.config.tokens.max_ttl:
            raise PkiError(
                f"--ttl {format_duration(ttl)} is outside what {self.config.source.name} allows (1s to tokens.max_ttl,"
                f" {format_duration(self.config.tokens.max_ttl)}). Pass a shorter --ttl."
            )
        now = dt.datetime.now(dt.timezone.utc)
        grant = grant_for(name, kind=kind, sans=sans, expires_at=now + ttl)
        pki.check_name_constraints(self.ca.cert, list(grant.sans))
        token, digest = mint_token()
        record = TokenRecord(
            hash=digest, name=name, kind=kind, sans=grant.san_texts, created_at=now, expires_at=grant.expires_at
        )
        self.db.run(lambda tx: tx.add_token(record))
        audit.record("token", identity=name, kind=kind, not_after=grant.expires_at)
        return token, grant

    # -- Enroll --------------------------------------------------------------

    def enroll(self, token: str, csr_pem: bytes, *, caller: str) -> Issuance:
        """Run in a worker thread or the CLI: blocks until the record is durable."""
        return self.db.run(self.enroll_job(token, csr_pem, caller=caller))

    def enroll_job(self, token: str, csr_pem: bytes, *, caller: str) -> Callable[[Transaction], Issuance]:
        """Checks done now (the CSR); the job decides on the token and records, in one transaction."""
        request = parse_csr(csr_pem)
        digest = token_hash(token)
        now = dt.datetime.now(dt.timezone.utc)

        def job(tx: Transaction) -> Issuance:
            grant = tx.token(digest)
            if grant is None:
                raise CaRefusal(
                    RefusalReason.TOKEN_UNKNOWN,
                    "this token is not known to the CA (mistyped, or made for another CA)."
                    " Ask for a new one: 'securechat ca token NAME --config ca.yaml'",
                )
            if grant.used_at is not None:
                earlier = tx.certificate(grant.used_serial) if grant.used_serial else None
                if earlier is not None and earlier.chain_pem and grant.used_spki == request.spki_sha256:
                    # The same key asking again: the reply was lost (a crash, a cut
                    # connection). Hand back what was issued; nothing new is made.
                    return Issuance(earlier, earlier.chain_pem, replayed=True)
                raise CaRefusal(
                    RefusalReason.TOKEN_USED,
                    f"this token was already used at {grant.used_at:%Y-%m-%d %H:%M:%S} UTC (certificate serial"
                    f" {grant.used_serial}); a token works once. Ask for a new one:"
                    f" 'securechat ca token {grant.name} --config ca.yaml'",
                    identity=grant.name,
                )
            if grant.expires_at <= now:
                raise CaRefusal(
                    RefusalReason.TOKEN_EXPIRED,
                    f"this token expired at {grant.expires_at:%Y-%m-%d %H:%M:%S} UTC. Ask for a new one:"
                    f" 'securechat ca token {grant.name} --config ca.yaml'",
                    identity=grant.name,
                )
            allowed = [san_from_text(text) for text in grant.sans]
            try:
                check_enrolment(request, name=grant.name, allowed=allowed)
            except CaRefusal as refusal:
                refusal.identity = grant.name
                raise
            issuance = self._sign(
                tx, request, name=grant.name, kind=grant.kind, sans=allowed, via="enroll", caller=caller
            )
            tx.use_token(digest, at=now, serial=issuance.record.serial, spki_sha256=request.spki_sha256)
            return issuance

        return job

    # -- Renew ---------------------------------------------------------------

    async def renew(
        self,
        csr_pem: bytes,
        *,
        presented: Sequence[x509.Certificate],
        proof: tuple[bytes, int] | None,
        caller: str,
        fingerprint: bytes | None = None,
    ) -> Issuance:
        """Renew the caller's current certificate (PRESENTED, its chain) for the CSR's key; the record is durable on return.

        How the current certificate is believed: its chain is judged by the
        TLS core (`tls.checks.verify_chain` through `policy.ChainVerdicts`:
        to this CA's trust anchors, valid now, the EKU of its kind, not
        revoked in the CRLs this CA publishes), whether it came from the
        mTLS handshake (PROOF None: TLS proved the key) or with PROOF (a
        signature by its key, checked by the core). Then the database's
        record of that serial decides, in the transaction that issues: it
        must exist, be of the presented key and not be revoked; its name,
        kind and SANs are what the new certificate carries.
        """
        leaf, facts, now = self._check_presented(presented, fingerprint)

        prepared: list[tuple[RenewalRequest, Issuance | None]] = []

        def prepare() -> None:
            # The CSR is verified and the certificate signed in the batch's PREPARE phase, so a
            # batch's renewals do their signatures one after another: the curve's tables stay in
            # the CPU caches, where gRPC and logging in between would evict them (that made each
            # signature two to three times as dear). With the identity the presented certificate
            # carries; the record then only has to agree (or, if it says otherwise, the job signs
            # what the record says).
            checked = self._check_request(csr_pem, leaf=leaf, facts=facts, proof=proof, now=now)
            prepared.append((checked, self._presign(checked, caller=caller)))

        def job(tx: Transaction) -> Issuance:
            checked, presigned = prepared[0]
            return self._renew_job(checked, caller=caller, presigned=presigned)(tx)

        return await self.db.run_async(job, prepare=prepare)

    async def renew_own(self, csr_pem: bytes, *, presented: Sequence[x509.Certificate]) -> Issuance:
        """Renew the CA service's own TLS certificate (PRESENTED) for the CSR's key, in-process; durable on return.

        The same decisions as `renew` (the chain judged by the core, revoked
        or expired refused, identity, kind and SANs from the record), with
        no proof: the service holds the key (`own.server_pair` checked it).
        A certificate the records do not hold yet (issued elsewhere and never
        imported) is recorded first: it is the one the service was started
        with, which the core accepted as this CA's server certificate.
        """
        checked = self.check_renewal(csr_pem, presented=presented, proof=None)
        renew = self._renew_job(checked, caller="self", presigned=self._presign(checked, caller="self"))
        leaf = presented[0]

        def job(tx: Transaction) -> Issuance:
            if tx.certificate(checked.serial) is None and checked.carried is not None:
                name, kind, sans = checked.carried
                tx.insert_certificate(
                    CertRecord(
                        serial=checked.serial,
                        name=name,
                        kind=kind,
                        sans=sans,
                        not_before=leaf.not_valid_before_utc,
                        not_after=leaf.not_valid_after_utc,
                        issued_at=leaf.not_valid_before_utc,
                        via="import",
                        caller="self",
                        spki_sha256=checked.spki_sha256,
                        issuer=leaf.issuer.rfc4514_string(),
                    )
                )
            return renew(tx)

        return await self.db.run_async(job)

    def _presign(self, checked: RenewalRequest, *, caller: str) -> Issuance | None:
        if checked.carried is None:
            return None
        name, kind, sans = checked.carried
        try:
            return self._issue(
                checked.request,
                name=name,
                kind=kind,
                sans=[san_from_text(text) for text in sans],
                via="renew",
                caller=caller,
                renewed_from=checked.serial,
            )
        except (CaRefusal, PkiError, ValueError):
            return None  # the job signs from the record, or refuses

    def check_renewal(
        self, csr_pem: bytes, *, presented: Sequence[x509.Certificate], proof: tuple[bytes, int] | None
    ) -> RenewalRequest:
        """Everything about a Renew that needs no database: the presented chain, the CSR, the proof, a new key."""
        leaf, facts, now = self._check_presented(presented, None)
        return self._check_request(csr_pem, leaf=leaf, facts=facts, proof=proof, now=now)

    def _check_presented(
        self, presented: Sequence[x509.Certificate], fingerprint: bytes | None
    ) -> tuple[x509.Certificate, _LeafFacts, dt.datetime]:
        """The presented chain, judged by the core (through the kept verdicts); its leaf, what it says, and now."""
        if not presented:
            raise CaRefusal(
                RefusalReason.NO_CERTIFICATE,
                "Renew needs the current certificate: over mTLS, or as current_chain_pem with a signature",
            )
        leaf = presented[0]
        if fingerprint is None:
            fingerprint = leaf.fingerprint(hashes.SHA256())
        facts = self._facts(leaf, fingerprint)
        now = dt.datetime.now(dt.timezone.utc)
        self.verdicts.judge(
            presented, now=now, crls=self.revocations(), identity=facts.identity, fingerprint=fingerprint
        )
        return leaf, facts, now

    @staticmethod
    def _check_request(
        csr_pem: bytes,
        *,
        leaf: x509.Certificate,
        facts: _LeafFacts,
        proof: tuple[bytes, int] | None,
        now: dt.datetime,
    ) -> RenewalRequest:
        """The CSR (and the proof of the current key, if any): readable, self-signed, a new key. No database here."""
        serial, identity = facts.serial, facts.identity
        try:
            request = parse_csr(csr_pem)
            if proof is not None:
                signature, signed_at = proof
                verify_renewal_proof(
                    leaf, signature=signature, csr_der=request.der, signed_at_unix_ms=signed_at, now=now
                )
        except CaRefusal as refusal:
            refusal.identity, refusal.serial = identity, serial
            raise
        leaf_spki = facts.spki_sha256
        if request.spki_sha256 == leaf_spki:
            raise CaRefusal(
                RefusalReason.SAME_KEY,
                f"the CSR reuses the key of certificate serial {serial}; a renewal needs a new key",
                identity=identity,
                serial=serial,
            )
        return RenewalRequest(
            request=request, serial=serial, identity=identity, spki_sha256=leaf_spki, carried=facts.carried
        )

    def _facts(self, leaf: x509.Certificate, fingerprint: bytes) -> _LeafFacts:
        """What the CA reads off a presented leaf, read once per certificate (a kept connection renews it often)."""
        facts = self._leaf_facts.get(fingerprint)
        if facts is None:
            facts = _LeafFacts(
                serial=f"{leaf.serial_number:x}",
                identity=presented_name(leaf),
                spki_sha256=spki_fingerprint(leaf.public_key()),  # type: ignore[arg-type]
                carried=_carried(leaf),
            )
            self._leaf_facts[fingerprint] = facts
            while len(self._leaf_facts) > MAX_CACHED_VERDICTS:
                self._leaf_facts.popitem(last=False)
        return facts

    def revocations(self, *, republished: bool = False) -> checks.RevocationIndex | None:
        """The CRLs in certs/crl.pem, verified by the core; read again whenever the file changes.

        None when there is no crl.pem and this CA never published one
        (nothing revoked yet). A crl.pem that cannot be read or is not signed
        by this CA's chain fails closed: every renewal is refused until it is
        fixed. A crl.pem older than what this CA published (a lower cRLNumber
        than the database's mark: a restored backup, an old copy, a deleted
        file) would un-revoke certificates for whoever reads it, so the CA
        publishes a new one at once, above the mark, from its database (see
        `publish_crl`), and says so as an error.
        """
        path = self._crl_path
        try:
            info = os.stat(path)
        except FileNotFoundError:
            if self._crl_high is None or republished:
                self._crl_state = None
                return None
            self._republish(f"{path} is missing, but this CA published CRL number {self._crl_high} there")
            return self.revocations(republished=True)
        except OSError as exc:
            raise self._crl_unusable(f"{path} cannot be read ({exc.strerror})") from exc
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if self._crl_state is not None and self._crl_state[0] == stamp:
            return self._crl_state[1]
        try:
            data = read_crl_file(path)
        except CrlFileError as exc:
            raise self._crl_unusable(exc.problem.message) from exc
        lists = load_crls(
            data, [self.ca.cert, *self.ca.leaf_chain, *self.anchors], where=str(path), signers_where="this CA"
        )
        if isinstance(lists, checks.Problem):
            raise self._crl_unusable(lists.message)
        index = checks.RevocationIndex(lists)
        mine = index.for_issuer(self._crl_key)
        # Another process ('securechat ca revoke') may have raised the mark: ask the database.
        mark = self._crl_high = self.db.run(lambda tx: tx.crl_number(self._crl_key))
        if mark is not None and (mine is None or mine.number < mark) and not republished:
            found = f"CRL number {mine.number}" if mine is not None else "no CRL of this CA"
            self._republish(f"{path} holds {found}, older than number {mark} this CA published")
            return self.revocations(republished=True)
        if mine is not None and (mark is None or mine.number > mark):
            # Published offline ('securechat certs revoke' / 'certs crl'): the mark follows it up.
            number = mine.number
            self.db.run(
                lambda tx: tx.raise_crl_number(
                    self._crl_key, issuer=self.issuer, number=number, at=dt.datetime.now(dt.timezone.utc)
                )
            )
            self._crl_high = number
        self._crl_state = (stamp, index)
        return index

    def _republish(self, why: str) -> None:
        try:
            self.import_index()
            crl = self.publish_crl()
        except SecureChatError as exc:
            raise self._crl_unusable(f"{why}, and a new CRL could not be published: {exc}") from exc
        log.error(
            "%s: an older CRL would un-revoke certificates, so the CA published CRL number %d from its database"
            " (%d revoked)",
            why,
            pki.crl_number(crl),
            len(crl),
        )

    def _crl_unusable(self, why: str) -> CaRefusal:
        log.error("renewals refused until the CRL is fixed: %s", why)
        return CaRefusal(
            RefusalReason.CA_UNAVAILABLE,
            f"the CA cannot check revocation now ({why}); try again later",
        )

    def _renew_job(
        self, checked: RenewalRequest, *, caller: str, presigned: Issuance | None = None
    ) -> Callable[[Transaction], Issuance]:
        serial = checked.serial

        def job(tx: Transaction) -> Issuance:
            current = tx.certificate(serial)
            if current is None:
                raise CaRefusal(
                    RefusalReason.UNKNOWN_CERTIFICATE,
                    f"certificate serial {serial} ({checked.identity}) is not in this CA's records, so it cannot renew"
                    " here. Enroll with a token instead",
                    identity=checked.identity,
                    serial=serial,
                )
            if current.spki_sha256 and current.spki_sha256 != checked.spki_sha256:
                # Records made online hold the key they were issued for (imports from
                # index.json do not): another certificate under this serial is not the one recorded.
                raise CaRefusal(
                    RefusalReason.UNKNOWN_CERTIFICATE,
                    f"certificate serial {serial} ({checked.identity}) is not the certificate this CA recorded under"
                    " that serial (another key), so it cannot renew here. Enroll with a token instead",
                    identity=checked.identity,
                    serial=serial,
                )
            if current.revoked_at is not None:
                # Revoked and committed, maybe not yet in crl.pem: the database orders it before this renewal.
                raise CaRefusal(
                    RefusalReason.REVOKED,
                    f"certificate serial {serial} ({current.name}) was revoked at"
                    f" {current.revoked_at:%Y-%m-%d %H:%M:%S} UTC ({current.reason or 'unspecified'}): a revoked"
                    " certificate cannot renew",
                    identity=current.name,
                    serial=serial,
                )
            # Identity, kind and SANs come from the record of what was issued,
            # never from the CSR: a renewal cannot widen a certificate.
            if presigned is not None and (presigned.record.name, presigned.record.kind, presigned.record.sans) == (
                current.name,
                current.kind,
                current.sans,
            ):
                tx.insert_certificate(presigned.record)
                return presigned
            sans = [san_from_text(text) for text in current.sans]
            return self._sign(
                tx,
                checked.request,
                name=current.name,
                kind=current.kind,
                sans=sans,
                via="renew",
                caller=caller,
                renewed_from=serial,
            )

        return job

    # -- Revoke --------------------------------------------------------------

    def revoke(self, name: str, *, serial: str | None = None, reason: str = "unspecified") -> list[CertRecord]:
        """Revoke NAME's unexpired certificates (or only SERIAL) in the database, then publish crl.pem.

        Renewal of a revoked certificate is refused from the moment the
        transaction commits (passive revocation); servers enforce crl.pem
        for the rest of its lifetime.
        """
        pki.validate_name(name)
        if reason not in pki.REASONS:
            raise PkiError(f"unknown revocation reason {reason!r}. Use one of: {', '.join(pki.REASONS)}.")
        wanted = _normalize_serial(serial) if serial is not None else None
        now = dt.datetime.now(dt.timezone.utc)

        def job(tx: Transaction) -> list[CertRecord]:
            known = tx.certificates(name)
            if not known:
                raise PkiError(f"{name} is not in the CA's database {self.config.database}. Check the name.")
            targets = [
                r
                for r in known
                if r.revoked_at is None and (r.serial == wanted if wanted is not None else r.not_after > now)
            ]
            if not targets:
                what = f"serial {wanted}" if wanted is not None else "unexpired certificate"
                raise PkiError(f"{name} has no {what} left to revoke (already revoked or expired). Nothing to do.")
            tx.revoke([r.serial for r in targets], at=now, reason=reason)
            return [tx.certificate(r.serial) for r in targets]  # type: ignore[misc]

        self.import_index()
        revoked = self.db.run(job)
        self.publish_crl()
        for record in revoked:
            audit.record(
                "revoked",
                identity=record.name,
                serial=record.serial,
                kind=record.kind,
                not_after=record.not_after,
                reason=reason,
            )
        return revoked

    def publish_crl(self) -> x509.CertificateRevocationList:
        """crl.pem in the certs directory: every revocation this issuing CA recorded, plus what it already listed.

        Its cRLNumber is above every number this CA published before, whatever
        crl.pem holds now: the number is reserved in the database (committed)
        before the file is written, so neither a crash, nor a crl.pem rolled
        back or deleted, ever makes the CA publish a number again or a lower
        one (servers refuse a lower number per issuer: `CrlHighWater`).
        """
        on_disk = pki.crl_number(self.store.read_crl()) if os.path.lexists(self.store.crl_path) else 0
        now = dt.datetime.now(dt.timezone.utc)

        def reserve(tx: Transaction) -> tuple[list[CertRecord], int]:
            number = max(tx.crl_number(self._crl_key) or 0, on_disk) + 1
            tx.raise_crl_number(self._crl_key, issuer=self.issuer, number=number, at=now)
            return tx.revoked(), number

        records, number = self.db.run(reserve)
        revocations = [
            pki.Revocation(serial=int(r.serial, 16), revoked_at=r.revoked_at, reason=r.reason or "unspecified")
            for r in records
            if r.revoked_at is not None and r.issuer in ("", self.issuer)
        ]
        crl = self.store.publish_crl(self.ca, revocations, days=self.config.crl_days, at_least=number)
        published = pki.crl_number(crl)
        if published > number:  # 'certs revoke' wrote a higher one meanwhile
            self.db.run(lambda tx: tx.raise_crl_number(self._crl_key, issuer=self.issuer, number=published, at=now))
        self._crl_high = max(published, self._crl_high or 0)
        return crl

    # -- index.json ----------------------------------------------------------

    def import_index(self) -> int:
        """Make what `securechat certs` issued here known (and its revocations); returns how many were new."""
        try:
            entries = [e for e in self.store.entries() if e.kind != "ca"]
        except PkiError as exc:
            log.warning("%s not imported: %s", self.store.index_path, exc)
            return 0
        if not entries:
            return 0
        issuer = self.issuer

        def job(tx: Transaction) -> int:
            added = 0
            for entry in entries:
                existing = tx.certificate(entry.serial)
                if existing is None:
                    tx.insert_certificate(
                        CertRecord(
                            serial=entry.serial,
                            name=entry.name,
                            kind=entry.kind,
                            sans=entry.sans,
                            not_before=entry.not_before,
                            not_after=entry.not_after,
                            issued_at=entry.not_before,
                            via="import",
                            revoked_at=entry.revoked_at if entry.status == "revoked" else None,
                            reason=entry.reason if entry.status == "revoked" else None,
                            issuer=issuer,
                        )
                    )
                    added += 1
                elif entry.status == "revoked" and existing.revoked_at is None and entry.revoked_at is not None:
                    tx.revoke([entry.serial], at=entry.revoked_at, reason=entry.reason or "unspecified")
            return added

        return self.db.run(job)

    # -- signing, inside a job -----------------------------------------------

    def _sign(
        self,
        tx: Transaction,
        request: CsrRequest,
        *,
        name: str,
        kind: str,
        sans: list[x509.GeneralName],
        via: str,
        caller: str,
        renewed_from: str | None = None,
    ) -> Issuance:
        issuance = self._issue(
            request, name=name, kind=kind, sans=sans, via=via, caller=caller, renewed_from=renewed_from
        )
        tx.insert_certificate(issuance.record)
        return issuance

    def _issue(
        self,
        request: CsrRequest,
        *,
        name: str,
        kind: str,
        sans: Sequence[x509.GeneralName],
        via: str,
        caller: str,
        renewed_from: str | None = None,
    ) -> Issuance:
        """Sign a certificate and make its record, which is not yet stored: nobody sees it until a job records it."""
        lifetime = self.config.lifetimes.of(kind)
        try:
            signed = self._signer.sign(name, request.public_key, kind=kind, sans=sans, lifetime=lifetime)  # type: ignore[arg-type]
        except PkiError as exc:
            raise CaRefusal(RefusalReason.CA_UNAVAILABLE, f"the CA cannot issue now: {exc}", identity=name) from exc
        chain_pem = pki.certificate_pem(signed.cert) + self._chain_tail_pem
        record = CertRecord(
            serial=f"{signed.cert.serial_number:x}",
            name=name,
            kind=kind,
            sans=tuple(pki.san_to_text(s) for s in sans),
            not_before=signed.cert.not_valid_before_utc,
            not_after=signed.cert.not_valid_after_utc,
            issued_at=dt.datetime.now(dt.timezone.utc),
            via=via,
            caller=caller,
            renewed_from=renewed_from,
            spki_sha256=request.spki_sha256,
            chain_pem=chain_pem,
            issuer=self.issuer,
        )
        return Issuance(record, chain_pem)


def _carried(leaf: x509.Certificate) -> tuple[str, str, tuple[str, ...]] | None:
    """What LEAF says it is, as a record would: (CN, kind by its EKUs, SANs as text); None without a CN."""
    common_names = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if len(common_names) != 1 or not isinstance(common_names[0].value, str):
        return None
    ekus = checks.extended_key_usages(leaf)
    server = ExtendedKeyUsageOID.SERVER_AUTH in ekus
    client = ExtendedKeyUsageOID.CLIENT_AUTH in ekus
    kind = "peer" if server and client else "server" if server else "client"
    return common_names[0].value, kind, tuple(pki.san_to_text(n) for n in checks.subject_alternative_names(leaf))


def _normalize_serial(text: str) -> str:
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return f"{int(cleaned, 16):x}"
    except ValueError:
        raise PkiError(f"serial {text!r} is not hexadecimal. Copy it from the CA's audit log.") from None


def _read_first_line(config: CaConfig, path: Path) -> bytes:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(config.source.name, "ca_passphrase_file", f"{path} cannot be read ({exc.strerror}).") from exc
    if not lines or not lines[0]:
        raise ConfigError(
            config.source.name, "ca_passphrase_file", f"{path} is empty.", "Put the passphrase on its first line."
        )
    return lines[0]
