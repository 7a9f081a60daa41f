"""Prometheus metrics of the online CA, on their own registry and (optionally) their own port.

    securechat_ca_issued_total{kind}          certificates issued by Enroll
    securechat_ca_renewed_total{kind}         certificates issued by Renew
    securechat_ca_refused_total{reason}       requests refused, by reason (securechat.ca.refusals)
    securechat_ca_certificate_expiry_timestamp_seconds{certificate}
                                              when the issuing CA and each trust anchor expire

Plain HTTP, no identities or key material: bind it to a private address.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class CaMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.issued = Counter(
            "securechat_ca_issued", "Certificates issued by Enroll, by kind.", ["kind"], registry=self.registry
        )
        self.renewed = Counter(
            "securechat_ca_renewed", "Certificates issued by Renew, by kind.", ["kind"], registry=self.registry
        )
        self.refused = Counter(
            "securechat_ca_refused", "Requests refused, by reason.", ["reason"], registry=self.registry
        )
        self.expiry = Gauge(
            "securechat_ca_certificate_expiry_timestamp_seconds",
            "Unix time at which a CA certificate expires (issuing = signs leaves; root = a trust anchor).",
            ["certificate", "subject"],
            registry=self.registry,
        )
        self._http: object | None = None

    def watch_certificates(self, issuing: x509.Certificate, anchors: Sequence[x509.Certificate]) -> None:
        self.expiry.clear()
        self.expiry.labels(certificate="issuing", subject=issuing.subject.rfc4514_string()).set(
            issuing.not_valid_after_utc.timestamp()
        )
        for anchor in anchors:
            if anchor == issuing:
                continue
            self.expiry.labels(certificate="root", subject=anchor.subject.rfc4514_string()).set(
                anchor.not_valid_after_utc.timestamp()
            )

    def serve(self, host: str, port: int) -> int:
        httpd, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http = httpd
        return int(httpd.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()  # type: ignore[attr-defined]
            self._http.server_close()  # type: ignore[attr-defined]
            self._http = None
