from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HelloRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("room", "text", "client_msg_id")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    room: str
    text: str
    client_msg_id: str
    def __init__(self, room: _Optional[str] = ..., text: _Optional[str] = ..., client_msg_id: _Optional[str] = ...) -> None: ...

class ChatEvent(_message.Message):
    __slots__ = ("id", "room", "sender", "text", "sent_at_unix_ms", "kind")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ChatEvent.Kind]
        MESSAGE: _ClassVar[ChatEvent.Kind]
        JOIN: _ClassVar[ChatEvent.Kind]
        LEAVE: _ClassVar[ChatEvent.Kind]
    KIND_UNSPECIFIED: ChatEvent.Kind
    MESSAGE: ChatEvent.Kind
    JOIN: ChatEvent.Kind
    LEAVE: ChatEvent.Kind
    ID_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    id: str
    room: str
    sender: str
    text: str
    sent_at_unix_ms: int
    kind: ChatEvent.Kind
    def __init__(self, id: _Optional[str] = ..., room: _Optional[str] = ..., sender: _Optional[str] = ..., text: _Optional[str] = ..., sent_at_unix_ms: _Optional[int] = ..., kind: _Optional[_Union[ChatEvent.Kind, str]] = ...) -> None: ...

class ChatEventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ChatEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[ChatEvent, _Mapping]]] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Identity(_message.Message):
    __slots__ = ("name", "spiffe_id", "serial", "not_after")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    name: str
    spiffe_id: str
    serial: str
    not_after: str
    def __init__(self, name: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., serial: _Optional[str] = ..., not_after: _Optional[str] = ...) -> None: ...
