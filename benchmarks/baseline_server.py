"""A minimal, straightforward grpc.aio chat server: the benchmark's baseline.

Same proto and mTLS as securechat, written the way the grpc.aio examples
suggest: per-member asyncio.Queue of ChatEvent messages, each member's
handler yielding them (so gRPC serializes every event once per member).
No ids history, limits or resume: only the fan-out.

    python benchmarks/baseline_server.py --listen 127.0.0.1:50052 --cert server.pem --key server-key.pem --ca ca.pem
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

import grpc

from securechat._gen import chat_pb2, chat_pb2_grpc


class Baseline(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self) -> None:
        self.rooms: dict[str, set[asyncio.Queue]] = {}
        self.ids = itertools.count(1)

    async def SayHello(self, request, context):  # noqa: N802 - gRPC method name
        return chat_pb2.HelloReply(message=f"Hello, {request.name or 'stranger'}!")

    def _name(self, context) -> str:
        names = context.auth_context().get("x509_common_name")
        return names[0].decode() if names else "anonymous"

    async def Chat(self, request_iterator, context):  # noqa: N802 - gRPC method name
        name = self._name(context)
        queue: asyncio.Queue = asyncio.Queue(maxsize=4096)
        joined: set[str] = set()

        async def read() -> None:
            async for message in request_iterator:
                room = message.room or "general"
                if room not in joined:
                    joined.add(room)
                    self.rooms.setdefault(room, set()).add(queue)
                if message.text:
                    event = chat_pb2.ChatEvent(
                        id=str(next(self.ids)), room=room, sender=name, text=message.text,
                        sent_at_unix_ms=time.time_ns() // 1_000_000, kind=chat_pb2.ChatEvent.MESSAGE,
                    )
                    for member in self.rooms[room]:
                        member.put_nowait(event)
            await queue.put(None)

        reader = asyncio.create_task(read())
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            reader.cancel()
            for room in joined:
                self.rooms[room].discard(queue)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    args = parser.parse_args()
    server = grpc.aio.server()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(Baseline(), server)
    if args.cert:
        with open(args.cert, "rb") as c, open(args.key, "rb") as k, open(args.ca, "rb") as a:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())], root_certificates=a.read(), require_client_auth=True)
        server.add_secure_port(args.listen, creds)
    else:
        server.add_insecure_port(args.listen)
    await server.start()
    print(f"baseline listening on {args.listen}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
