"""A Python client of the securechat wire API with plain grpcio, nothing from securechat itself.

It uses only the certificates `securechat quickstart` writes and
protos/securechat/v1/chat.proto, compiled at start-up by grpcio-tools
(`grpc.protos_and_services`), as another team's own service would. It prints
the same lines as the Go and Node examples (see ../README.md):

    pip install -r examples/python/requirements.txt
    python examples/python/client.py --dir DIR --target localhost:50051
"""

from __future__ import annotations

import argparse
import os
import queue
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# gRPC core logs every failed handshake to stderr; this program explains
# failures itself, so core stays quiet unless GRPC_VERBOSITY asks otherwise.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # noqa: E402

# The trailing-metadata key that carries a refusal's machine-readable reason.
# Clients act on it, never on the human message.
REFUSAL_KEY = "securechat-refusal"
# The metadata key that asks the server for a room's events after an id.
LAST_EVENT_ID_KEY = "last-event-id"
CALL_TIMEOUT = 20.0
PROTOS = Path(__file__).resolve().parents[2] / "protos"

# grpc.protos_and_services imports the .proto through sys.path.
sys.path.insert(0, str(PROTOS))
chat_pb2, chat_pb2_grpc = grpc.protos_and_services("securechat/v1/chat.proto")

MESSAGE = chat_pb2.ChatEvent.MESSAGE
JOIN = chat_pb2.ChatEvent.JOIN


def fail(message: str) -> None:
    print(f"securechat-example: {message}", file=sys.stderr)
    raise SystemExit(1)


# What a client does about each refusal reason (the table in the top-level
# README's "Wire API"); an unknown one falls back to the status code.
ACTIONS = {
    "fix-the-request": ("invalid-room", "text-too-long", "bad-resume-id"),  # resending fails the same way
    "back-off-and-retry": ("rate-limited", "too-many-rooms", "too-many-streams", "too-many-connections"),
    "reconnect-with-last-event-id": ("slow-consumer", "feed-lost", "shutting-down", "stream-broken"),  # nothing is lost
    "resend-with-the-same-client-msg-id": ("broker-unavailable",),  # the message was not accepted
    "resume-from-securechat-resume-from": ("history-gone",),
    "stop": (
        "no-certificate",
        "bad-certificate",
        "revoked",
        "not-allowed",
    ),  # only a new certificate or permission helps
}


def action_for(reason: str) -> str:
    """What to do about REASON."""
    if not reason:
        return "none-given"
    return next((action for action, reasons in ACTIONS.items() if reason in reasons), "unknown-reason")


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"{path}: {exc.strerror}. Run 'securechat quickstart --dir DIR' and pass --dir DIR")
        raise


def channel(target: str, certs: Path, name: str | None) -> grpc.Channel:
    """An mTLS channel as NAME (alice.pem + alice-key.pem), or with no client certificate at all."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(certs / "ca.pem"),
        private_key=read(certs / f"{name}-key.pem") if name else None,
        certificate_chain=read(certs / f"{name}.pem") if name else None,
    )
    return grpc.secure_channel(target, credentials)


def is_message(event: Any, sender: str, text: str) -> bool:
    return bool(event.kind == MESSAGE and event.sender == sender and event.text == text)


class ChatSession:
    """One Chat stream: messages go in through a queue, events come out of the call."""

    def __init__(self, stub: Any, last_event_id: str = "") -> None:
        self._outbox: queue.Queue[Any] = queue.Queue()
        metadata = [(LAST_EVENT_ID_KEY, last_event_id)] if last_event_id else None
        self.call = stub.Chat(self._requests(), metadata=metadata, timeout=CALL_TIMEOUT)

    def _requests(self) -> Iterator[Any]:
        while (message := self._outbox.get()) is not None:
            yield message

    def send(self, room: str, text: str = "", client_msg_id: str = "") -> None:
        self._outbox.put(chat_pb2.ChatMessage(room=room, text=text, client_msg_id=client_msg_id))

    def until(self, match: Callable[[Any], bool], seen: Callable[[Any], None] = lambda _: None) -> Any:
        """The first event that matches (earlier ones go to SEEN); grpc.RpcError if the stream ends first."""
        for event in self.call:
            if match(event):
                return event
            seen(event)
        raise RuntimeError("the server ended the stream")

    def join(self, room: str, me: str, seen: Callable[[Any], None] = lambda _: None) -> None:
        """Post an empty message (joins without posting) and wait for our own JOIN."""
        self.send(room)
        self.until(lambda ev: ev.kind == JOIN and ev.sender == me and ev.room == room, seen)

    def close(self) -> None:
        self._outbox.put(None)
        self.call.cancel()


def bob_says(bob: Any, room: str, text: str) -> None:
    """Post TEXT as bob on a stream of its own and wait for bob's echo."""
    chat = ChatSession(bob)
    chat.send(room, text, secrets.token_hex(16))
    chat.until(lambda ev: is_message(ev, "bob", text))
    chat.close()


def run(target: str, directory: Path, room: str) -> None:
    certs = directory / "certs"
    alice_channel, bob_channel = channel(target, certs, "alice"), channel(target, certs, "bob")
    alice, bob = chat_pb2_grpc.ChatServiceStub(alice_channel), chat_pb2_grpc.ChatServiceStub(bob_channel)

    # Unary calls: the server names us from our certificate, not the payload.
    reply = alice.SayHello(chat_pb2.HelloRequest(name="mallory"), timeout=CALL_TIMEOUT)
    print(f"hello: {reply.message}")
    me = alice.WhoAmI(chat_pb2.WhoAmIRequest(), timeout=CALL_TIMEOUT)
    print(f"whoami: name={me.name} serial={me.serial} not_after={me.not_after}")

    # Chat: join, send with a client_msg_id, read our echo (the
    # acknowledgement) and another member's message.
    chat = ChatSession(alice)
    chat.join(room, "alice")
    print(f"chat: joined room={room}")
    text, msg_id = "hello from python", secrets.token_hex(16)
    chat.send(room, text, msg_id)
    echo = chat.until(lambda ev: is_message(ev, "alice", text))
    print(f"chat: echo id={echo.id} sender={echo.sender} client_msg_id={msg_id} text={echo.text}")

    bob_says(bob, room, "hello from bob (python)")
    other = chat.until(lambda ev: is_message(ev, "bob", "hello from bob (python)"))
    print(f"chat: other id={other.id} sender={other.sender} text={other.text}")
    last_seen = other.id

    # Reconnect: drop the stream, miss a message, resume with last-event-id.
    chat.close()
    bob_says(bob, room, "while you were away (python)")
    chat = ChatSession(alice, last_seen)
    replayed: list[Any] = []
    chat.join(
        room, "alice", lambda ev: replayed.append(ev) if is_message(ev, "bob", "while you were away (python)") else None
    )
    if not replayed:
        fail(f"resume: the server did not replay the message sent after id {last_seen}")
    print(
        f"resume: last-event-id={last_seen} replayed id={replayed[0].id} sender={replayed[0].sender} text={replayed[0].text}"
    )

    # Unsure whether a send landed (the stream broke)? Send it again with the
    # same client_msg_id: the server acknowledges it with the original event
    # and delivers it to nobody twice.
    chat.send(room, text, msg_id)
    again = chat.until(lambda ev: is_message(ev, "alice", text))
    print(
        f"retry: client_msg_id={msg_id} id={again.id} first_id={echo.id} same_event={str(again.id == echo.id).lower()}"
    )
    chat.close()

    # A refusal: the status says what happened, the trailing metadata says
    # why, as data a program can act on.
    chat = ChatSession(alice)
    chat.send("bad room!")
    try:
        chat.until(lambda _: False)
    except grpc.RpcError as refused:
        reason = dict(refused.trailing_metadata() or ()).get(REFUSAL_KEY, "")
        print(
            f"refusal: code={refused.code().name} reason={reason or '(none)'} "
            f"action={action_for(reason)} message={refused.details()}"
        )
    else:
        fail("a message to room 'bad room!' was not refused")
    chat.close()

    # Without a client certificate the server refuses the TLS handshake.
    with channel(target, certs, None) as anonymous:
        try:
            chat_pb2_grpc.ChatServiceStub(anonymous).SayHello(
                chat_pb2.HelloRequest(name="mallory"), timeout=CALL_TIMEOUT
            )
        except grpc.RpcError as refused:
            print(f"no-client-cert: code={refused.code().name}")
        else:
            fail("SayHello without a client certificate succeeded; the server must require one")
    alice_channel.close()
    bob_channel.close()
    print("done")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, type=Path, help="a `securechat quickstart --dir DIR` directory")
    parser.add_argument("--target", default="localhost:50051", help="the server, HOST:PORT")
    parser.add_argument("--room", default="", help="the room to chat in (default: a fresh one per run)")
    args = parser.parse_args()
    try:
        run(args.target, args.dir, args.room or f"examples-python-{secrets.token_hex(4)}")
    except grpc.RpcError as exc:
        fail(f"{exc.code().name} {exc.details()}")


if __name__ == "__main__":
    main()
