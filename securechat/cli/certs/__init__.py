"""`securechat certs ...`: issue and inspect certificates.

A thin conversation over `securechat.pki`: parse flags, call the library,
say which files were written, what names they cover and when they expire.
Every command exits 0 on success, 1 on an error (one line on stderr), and 2
on a usage error (`needs-renewal`: 1 means something is due, 2 the check failed).

    common.py     shared options, output helpers, passphrase prompts
    issue.py      init, server, peer, client
    show.py       list, inspect
    lifecycle.py  revoke, crl, renew, needs-renewal
    export.py     export (PKCS#12), k8s-secret
    online.py     a hierarchy and the online CA: intermediate, enroll (and init --intermediate, renew --ca)

Commands are registered here, in the order `--help` lists them.
"""

from __future__ import annotations

import typer

from securechat.cli.certs import export, issue, lifecycle, online, show

certs_app = typer.Typer(
    help="Issue and inspect certificates: a private CA, server and client certificates.",
    no_args_is_help=True,
    rich_markup_mode=None,  # click's plain help: wraps within 80 columns, no Rich at start
)

certs_app.command("init")(issue.init)
certs_app.command("server")(issue.server)
certs_app.command("peer")(issue.peer)
certs_app.command("client")(issue.client)
certs_app.command("list")(show.list_)
certs_app.command("inspect")(show.inspect)
certs_app.command("revoke")(lifecycle.revoke)
certs_app.command("crl")(lifecycle.crl)
certs_app.command("renew")(lifecycle.renew)
certs_app.command("needs-renewal")(lifecycle.needs_renewal)
certs_app.command("export")(export.export)
certs_app.command("k8s-secret")(export.k8s_secret)
certs_app.command("intermediate")(online.intermediate)
certs_app.command("enroll")(online.enroll)

__all__ = ["certs_app"]
