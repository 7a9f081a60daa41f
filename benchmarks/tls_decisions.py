"""What securechat's own certificate decisions cost on the per-call path.

A report, never a test: JSON on stdout. The auth interceptor runs on every
call; since issue 13 it asks `PeerVerifier.identify` (securechat's chain and
identity decision, cached per certificate + chain) instead of the leaf-only
`identity_from_pem` (an lru_cache on the PEM). Both are timed here with fresh
`bytes` objects per call, as gRPC hands out the auth context, beside the
cost of one full decision (a cache miss: securechat's path checks plus
cryptography's verifier) for a leaf + intermediate chain.

    python -m benchmarks.tls_decisions
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chains import make_ca, make_leaf  # noqa: E402

from securechat.tls.identity import PeerVerifier, identity_from_pem  # noqa: E402


def main() -> None:
    root = make_ca("root")
    inter = make_ca("inter", root, path_length=0)
    leaf = make_leaf(inter, ["alice"])
    pem, chain = leaf.pem, inter.pem
    verifier = PeerVerifier([root.cert])
    verifier.identify(pem, chain)
    identity_from_pem(pem)
    calls = 20_000

    def per_call_us(function: object, number: int, repeat: int = 5) -> float:
        return min(timeit.repeat(function, number=number, repeat=repeat)) / number * 1e6  # type: ignore[arg-type]

    leaf_only = per_call_us(lambda: identity_from_pem(bytes(pem)), calls)
    hit = per_call_us(lambda: verifier.identify(bytes(pem), bytes(chain)), calls)
    miss = per_call_us(lambda: PeerVerifier([root.cert]).identify(pem, chain), 200, 3)
    print(
        json.dumps(
            {
                "parameters": {"calls": calls, "chain": "leaf + intermediate, ECDSA P-256", "repeat": "best of 5"},
                "leaf_only_lru_us_per_call": round(leaf_only, 3),
                "verifier_cache_hit_us_per_call": round(hit, 3),
                "verifier_full_decision_us": round(miss, 1),
                "hit_vs_leaf_only": round(hit / leaf_only, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
