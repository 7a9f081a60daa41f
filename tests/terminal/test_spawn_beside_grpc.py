"""A child forked from a process with gRPC running gets nothing of gRPC's on its terminal.

pexpect forks the test process for every interactive test, and by then the
process has gRPC's threads (in-process servers and channels of other tests).
Between fork and exec the child closes the descriptors it inherited, as
ptyprocess does; here the child then waits 10 ms before leaving, to widen the
window in which the real ones, which exec at once, rarely got gRPC's
`epoll_wait` error. tests/conftest.py turns gRPC's fork support off for that
reason; the failing twin runs the same forks in a process with grpcio's
default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

FORKS = 40

SPAWNER = textwrap.dedent(
    f"""
    import asyncio, json, sys
    sys.path.insert(0, {os.path.dirname(__file__)!r})
    from test_spawn_beside_grpc import fork_children_beside_grpc
    print(json.dumps(asyncio.run(fork_children_beside_grpc())))
    """
)


def child_output() -> str:
    """Fork a child that closes what it inherited, as ptyprocess does before exec, and return what it wrote."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(write_end, 2)
        os.closerange(3, 1024)
        time.sleep(0.01)
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as output:
        return output.read().decode(errors="replace")


async def fork_children_beside_grpc() -> list[str]:
    """Fork FORKS children while a grpc.aio server and channel are live; return what those that wrote anything wrote."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    noisy: list[str] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(FORKS):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                if output := child_output():
                    noisy.append(output)
    finally:
        await server.stop(None)
    return noisy


def run_spawner(fork_support: str | None) -> list[str]:
    """The forks in a fresh process, with gRPC's default verbosity (securechat's CLI, once imported here, sets NONE)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRPC_ENABLE_FORK_SUPPORT", "GRPC_VERBOSITY")}
    if fork_support is not None:
        env["GRPC_ENABLE_FORK_SUPPORT"] = fork_support
    done = subprocess.run(
        [sys.executable, "-c", SPAWNER], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    noisy: list[str] = json.loads(done.stdout.splitlines()[-1])
    return noisy


def test_children_forked_beside_grpc_get_nothing_with_fork_support_off():
    """Fork support off, as tests/conftest.py sets it for this process and its children: no child gets a word."""
    assert os.environ["GRPC_ENABLE_FORK_SUPPORT"] == "0"
    assert run_spawner(os.environ["GRPC_ENABLE_FORK_SUPPORT"]) == []


def test_with_grpcios_default_some_children_get_the_epoll_error():
    """The same forks with grpcio's default fork support: some children get gRPC's epoll error on their stderr."""
    noisy = run_spawner(None)
    assert noisy and all("epoll_wait error: Bad file descriptor" in output for output in noisy), noisy
