"""TLS for securechat: one place that decides about certificates, and the material gRPC uses.

    checks.py       verify_chain, check_leaf, check_pair, ... -> Problem: the ONE place that
                    decides whether a certificate or chain is good (returns problems as data)
    failures.py     TlsFailure: the ONE taxonomy of TLS failure reasons (core log, doctor, client)
    material.py     load_server_material / load_client_material: the files a config names,
                    read once, checked with checks.py, raised as ConfigError
    credentials.py  grpc credentials from checked material, static and rotating
    identity.py     PeerIdentity (who is calling) and AuthzPolicy (who may call what)
    revocation.py   CRLs: matched by key, rollback refused (high-water mark), fail closed
    watch.py        FileWatch: notice changed files by content

This package's `__init__` imports nothing: `securechat.pki` uses `checks`, and
`material` uses `securechat.pki`, so an eager import here would be a cycle.
"""
