"""The wire protocol between a device and the edge server.

Every message is a 4-byte big-endian length ``L`` followed by ``L`` bytes of body. A request body is a
14-byte header and the codec frame of the split tensor (:mod:`splitrl.codecs`); a reply body is a
39-byte header (magic ``SRP2``) and, for an error, a UTF-8 message. The byte tables are in
``docs/deploy.md``. Replies of the first version (magic ``SRP1``, a 35-byte header without the
receive time) are still read.

Replies may arrive out of order (the server runs the requests of one connection concurrently); the
request id matches them up.
"""

from __future__ import annotations

import asyncio
import math
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum

LENGTH_PREFIX = struct.Struct(">I")
REQUEST_HEADER = struct.Struct(">4sIBBI")
REPLY_HEADER = struct.Struct(">4sBIHfffffff")
#: the first reply version, without ``receive_s``; still decoded
REPLY_HEADER_V1 = struct.Struct(">4sBIHffffff")
REQUEST_MAGIC = b"SRQ1"
REPLY_MAGIC = b"SRP2"
REPLY_MAGIC_V1 = b"SRP1"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: request id of an error reply to a message whose header could not be read
UNKNOWN_REQUEST_ID = 0xFFFF_FFFF
#: predicted class of a reply that carries no prediction
NO_CLASS = 0xFFFF
_MAX_DEADLINE_US = 0xFFFF_FFFF


class ProtocolError(ValueError):
    """A message breaks the wire protocol (bad length, magic, header or field value)."""


class BadLengthPrefix(ProtocolError):
    """A length prefix the receiver refuses (empty message or above its limit): the stream cannot
    be resynchronized after it."""


class MessageTooLarge(BadLengthPrefix):
    """A length prefix announces more bytes than the receiver accepts."""


class ReplyStatus(IntEnum):
    """Outcome of a request, carried in every reply."""

    OK = 0
    BAD_REQUEST = 1
    EXPIRED = 2
    SERVER_ERROR = 3


@dataclass(frozen=True)
class Request:
    """One inference request.

    :param request_id: chosen by the device, echoed in the reply (``0 .. 2**32 - 2``).
    :param exit_index: which exit answers (``0 .. 255``).
    :param split: the device ran stages ``[0, split)``; ``frame`` holds the tensor at that split.
    :param frame: the codec frame of one sample's split tensor (no batch dimension).
    :param deadline_s: time budget from the moment the server reads the request; a request still
        waiting for a worker when it runs out is answered with :attr:`ReplyStatus.EXPIRED`
        instead of being computed. ``None``: no deadline.
    """

    request_id: int
    exit_index: int
    split: int
    frame: bytes
    deadline_s: float | None = None

    def encode(self) -> bytes:
        """The request body (without the length prefix)."""
        if not 0 <= self.request_id < UNKNOWN_REQUEST_ID:
            raise ProtocolError(f"request_id must be in 0..{UNKNOWN_REQUEST_ID - 1}")
        if not (0 <= self.exit_index <= 255 and 0 <= self.split <= 255):
            raise ProtocolError(
                f"exit_index and split must be in 0..255, got {self.exit_index}, {self.split}"
            )
        deadline_us = 0
        if self.deadline_s is not None:
            if not (math.isfinite(self.deadline_s) and self.deadline_s > 0):
                raise ProtocolError(f"deadline_s must be positive, got {self.deadline_s}")
            deadline_us = min(max(round(self.deadline_s * 1e6), 1), _MAX_DEADLINE_US)
        header = REQUEST_HEADER.pack(
            REQUEST_MAGIC, self.request_id, self.exit_index, self.split, deadline_us
        )
        return header + self.frame

    @classmethod
    def decode(cls, body: bytes) -> Request:
        """Parse a request body.

        :raises ProtocolError: for a short body, a wrong magic or the reserved request id
            :data:`UNKNOWN_REQUEST_ID`.
        """
        if len(body) < REQUEST_HEADER.size:
            raise ProtocolError(
                f"request of {len(body)} bytes is shorter than its {REQUEST_HEADER.size}-byte header"
            )
        magic, request_id, exit_index, split, deadline_us = REQUEST_HEADER.unpack_from(body)
        if magic != REQUEST_MAGIC:
            raise ProtocolError(f"bad request magic {magic!r}, expected {REQUEST_MAGIC!r}")
        if request_id == UNKNOWN_REQUEST_ID:
            raise ProtocolError(
                f"request id {UNKNOWN_REQUEST_ID:#x} is reserved for replies to unreadable requests"
            )
        deadline = deadline_us * 1e-6 if deadline_us else None
        return cls(request_id, exit_index, split, bytes(body[REQUEST_HEADER.size :]), deadline)


@dataclass(frozen=True)
class Reply:
    """The server's answer to one request.

    :param request_id: the request's id (:data:`UNKNOWN_REQUEST_ID` when it could not be read).
    :param status: outcome.
    :param predicted: predicted class (:data:`NO_CLASS` unless ``status`` is OK).
    :param confidence: max-softmax probability of the prediction.
    :param server_load: the server's utilization when the reply was sent, in ``[0, 1]``
        (see :class:`splitrl.runtime.server.LoadMeter`).
    :param queue_s: time the request waited for an inference worker.
    :param decode_s: codec decode time.
    :param compute_s: time to run the tail stages and the exit head.
    :param service_s: time from reading the request to writing the reply.
    :param error: what was wrong, for a reply that is not OK.
    :param receive_s: time from the request's first byte to its last at the server: the uplink
        transfer as the server sees it (0 in an error reply; NaN in a version-1 reply, which
        has no such field).
    """

    request_id: int
    status: ReplyStatus
    predicted: int = NO_CLASS
    confidence: float = 0.0
    server_load: float = 0.0
    queue_s: float = 0.0
    decode_s: float = 0.0
    compute_s: float = 0.0
    service_s: float = 0.0
    error: str = ""
    receive_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the reply carries a prediction."""
        return self.status is ReplyStatus.OK

    def encode(self) -> bytes:
        """The reply body (without the length prefix)."""
        header = REPLY_HEADER.pack(
            REPLY_MAGIC,
            int(self.status),
            self.request_id,
            self.predicted,
            self.confidence,
            self.server_load,
            self.queue_s,
            self.decode_s,
            self.compute_s,
            self.service_s,
            self.receive_s,
        )
        return header + self.error.encode("utf-8")

    @classmethod
    def decode(cls, body: bytes) -> Reply:
        """Parse a reply body.

        :raises ProtocolError: for a short body, a wrong magic or an unknown status.
        """
        header = REPLY_HEADER_V1 if bytes(body[:4]) == REPLY_MAGIC_V1 else REPLY_HEADER
        size = header.size
        if len(body) < size:
            raise ProtocolError(
                f"reply of {len(body)} bytes is shorter than its {size}-byte header"
            )
        magic, status, request_id, predicted, *timings = header.unpack_from(body)
        if magic not in (REPLY_MAGIC, REPLY_MAGIC_V1):
            raise ProtocolError(f"bad reply magic {magic!r}, expected {REPLY_MAGIC!r}")
        try:
            reply_status = ReplyStatus(status)
        except ValueError:
            raise ProtocolError(f"unknown reply status {status}") from None
        confidence, load, queue_s, decode_s, compute_s, service_s, *receive = timings
        return cls(
            request_id,
            reply_status,
            predicted,
            confidence,
            load,
            queue_s,
            decode_s,
            compute_s,
            service_s,
            bytes(body[size:]).decode("utf-8", errors="replace"),
            receive[0] if receive else math.nan,
        )


def frame_message(body: bytes) -> bytes:
    """Prefix ``body`` with its length."""
    return LENGTH_PREFIX.pack(len(body)) + body


def check_length(length: int, max_bytes: int) -> None:
    """Refuse an empty message or one above ``max_bytes``.

    :raises MessageTooLarge: when ``length > max_bytes``.
    :raises BadLengthPrefix: when ``length == 0``.
    """
    if length > max_bytes:
        raise MessageTooLarge(f"message of {length} bytes exceeds the limit of {max_bytes} bytes")
    if length == 0:
        raise BadLengthPrefix("empty message (length prefix 0)")


async def read_length(
    reader: asyncio.StreamReader,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    idle_timeout_s: float | None = None,
    read_timeout_s: float | None = None,
) -> int | None:
    """Read and check the length prefix of the next message.

    :param reader: the stream.
    :param max_bytes: largest accepted body.
    :param idle_timeout_s: how long to wait for the first byte of the message.
    :param read_timeout_s: how long the other three bytes may take once the first arrived.
    :return: the body length, or ``None`` when the peer closed the connection between messages.
    :raises TimeoutError: a timeout ran out.
    :raises BadLengthPrefix: an empty message or one above ``max_bytes``.
    :raises ProtocolError: the peer closed the connection inside the prefix.
    """
    first = await asyncio.wait_for(reader.read(1), idle_timeout_s)
    if not first:
        return None
    async with asyncio.timeout(read_timeout_s):
        (length,) = LENGTH_PREFIX.unpack(first + await _read_exactly(reader, 3))
    check_length(length, max_bytes)
    return int(length)


async def read_body(
    reader: asyncio.StreamReader, length: int, *, read_timeout_s: float | None = None
) -> bytes:
    """Read a message body of ``length`` bytes (after :func:`read_length`).

    :raises TimeoutError: the body took longer than ``read_timeout_s``.
    :raises ProtocolError: the peer closed the connection inside the body.
    """
    async with asyncio.timeout(read_timeout_s):
        return await _read_exactly(reader, length)


async def _read_exactly(reader: asyncio.StreamReader, n_bytes: int) -> bytes:
    try:
        return await reader.readexactly(n_bytes)
    except asyncio.IncompleteReadError as error:
        raise ProtocolError(
            f"connection closed inside a message ({len(error.partial)} bytes of the last read)"
        ) from None


async def read_message(
    reader: asyncio.StreamReader,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    idle_timeout_s: float | None = None,
    read_timeout_s: float | None = None,
) -> bytes | None:
    """Read one message body from a stream (:func:`read_length`, then :func:`read_body`).

    :param reader: the stream.
    :param max_bytes: largest accepted body.
    :param idle_timeout_s: how long to wait for the first byte of the message.
    :param read_timeout_s: how long the prefix, and then the body, may each take.
    :return: the body, or ``None`` when the peer closed the connection between messages.
    :raises TimeoutError: a timeout ran out.
    :raises ProtocolError: bad length prefix, or the peer closed the connection inside a message.
    """
    length = await read_length(
        reader, max_bytes=max_bytes, idle_timeout_s=idle_timeout_s, read_timeout_s=read_timeout_s
    )
    if length is None:
        return None
    return await read_body(reader, length, read_timeout_s=read_timeout_s)


def recv_exactly(sock: socket.socket, n_bytes: int) -> bytes:
    """Read exactly ``n_bytes`` from a blocking socket.

    :raises ConnectionError: the peer closed the connection first.
    """
    chunks = bytearray()
    while len(chunks) < n_bytes:
        chunk = sock.recv(n_bytes - len(chunks))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(chunks)} of {n_bytes} bytes")
        chunks += chunk
    return bytes(chunks)


def recv_message(sock: socket.socket, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> bytes:
    """Read one message body from a blocking socket.

    :raises ProtocolError: bad length prefix.
    :raises ConnectionError: the peer closed the connection.
    """
    (length,) = LENGTH_PREFIX.unpack(recv_exactly(sock, LENGTH_PREFIX.size))
    check_length(length, max_bytes)
    return recv_exactly(sock, length)
