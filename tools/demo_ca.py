"""`make demo-ca`: the online CA: a root + intermediate, enrolment with a token, live renewal, passive revocation.

Certificates here live 20 seconds (`quickstart --ca-service --ca-lifetime 20s`),
so a renewal happens while you watch; every step is the real `securechat`
command, printed first. It takes under a minute.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import tempfile
from pathlib import Path

from demo import Process, run, say

LIFETIME = "20s"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="securechat-demo-ca-") as raw:
        work = Path(raw)
        say(f"1. A root, an issuing intermediate, the CA's ca.yaml and {LIFETIME} certificates that renew themselves")
        run(["quickstart", "--ca-service", "--dir", ".", "--ca-lifetime", LIFETIME], work)
        ca_port = free_port()
        for name in ("server.yaml", "alice.yaml", "bob.yaml"):  # the demo's free port instead of 50052
            path = work / name
            path.write_text(path.read_text().replace("localhost:50052", f"localhost:{ca_port}"))
        run(["certs", "list", "--dir", "certs"], work)

        say("2. Start the CA service, then the chat server (it renews its own certificate from the CA)")
        ca = Process("ca", ["ca", "serve", "--config", "ca.yaml", "--listen", f"127.0.0.1:{ca_port}"], work)
        processes = [ca]
        try:
            ca.wait_for(r"securechat CA listening on")
            server = Process("server", ["serve", "--config", "server.yaml", "--listen", "127.0.0.1:0"], work)
            processes.append(server)
            port = server.wait_for(r"listening on \S+:(\d+)").group(1)
            target = f"localhost:{port}"

            say("3. carol enrols: the CA mints a single-use token; carol makes her key and sends only a CSR")
            token = run(["ca", "token", "carol", "--config", "ca.yaml", "--json"], work)
            secret = json.loads(token.stdout)["token"]
            run(["certs", "enroll", "carol", "--ca", f"localhost:{ca_port}", "--ca-cert", "certs/root.pem",
                 "--token", secret, "--dir", "carol"], work)
            (work / "carol.yaml").write_text(
                f"target: {target}\ntls: {{ca: carol/root.pem, cert: carol/carol.pem, key: carol/carol-key.pem}}\n"
            )
            run(["hello", "--config", "carol.yaml"], work)
            say("   The same token again is refused: it works once")
            run(["certs", "enroll", "carol", "--ca", f"localhost:{ca_port}", "--ca-cert", "certs/root.pem",
                 "--token", secret, "--dir", "carol-again"], work, expect_ok=False)

            say(f"4. alice and bob chat while their certificates ({LIFETIME}) and the server's renew at ~2/3 of their life")
            alice = Process("alice", ["chat", "--config", "alice.yaml", "--target", target, "--room", "general"], work)
            processes.append(alice)
            alice.wait_for(r"\* alice joined")
            bob = Process("bob", ["chat", "--config", "bob.yaml", "--target", target, "--room", "general"], work)
            processes.append(bob)
            alice.wait_for(r"\* bob joined")
            bob.type("hi alice, before the renewal")
            alice.wait_for(r"bob: hi alice, before")
            server.wait_for(r"TLS files changed: new handshakes get certificate serial")
            ca.wait_for(r"event=renewed identity=alice")
            alice.type("hello bob, after the renewal: same chat, new certificate")
            bob.wait_for(r"alice: hello bob, after the renewal")

            say("5. Revoke bob: the CA refuses his renewals from now on, and the server enforces the new crl.pem")
            run(["ca", "revoke", "bob", "--config", "ca.yaml"], work)
            run(["hello", "--config", "bob.yaml", "--target", target], work, expect_ok=False)
            if alice.close_input() != 0:
                raise SystemExit("demo failed: alice's chat exited non-zero")
            bob.close_input()
        finally:
            for process in reversed(processes):
                if process.proc.poll() is None:
                    process.proc.send_signal(signal.SIGTERM)
            for process in processes:
                process.proc.wait(timeout=20)
        say("Demo complete: enrolment by token, live renewal of short-lived certificates, passive revocation.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
