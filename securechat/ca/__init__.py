"""The online CA: short-lived certificates on request, renewed by their holders, revoked passively.

    (config)      ca.yaml is securechat.config.ca (CaConfig: lifetimes, tokens, ports, database)
    tokens.py     single-use enrolment tokens, stored only as a hash
    database.py   SQLite (WAL) with group commit: durable before a reply
    policy.py     CSR checks, renewal proofs, the chain check adapter
    refusals.py   why a request was refused: reason (data) + message
    authority.py  OnlineCa: enrol, renew, revoke, mint tokens, publish the CRL
    service.py    the grpc.aio servicer and `start_ca_server`
    audit.py      one structured audit line per issuance and refusal
    metrics.py    Prometheus: issued, renewed, refused by reason, CA expiry
    client.py     the requester's side: enroll, renew, trust bundle
    renewal.py    the renew loop servers, clients and `securechat agent` run

Keys are made by their owners; the CA only signs CSRs and never sees a
private key. Nothing here prints; `securechat.cli.ca` does.
"""
