"""Large writes leave at once when nothing is queued before them (``writethrough``)."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator

import pytest
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor, StringTransport
from zope.interface import implementer

from s3relay.compat import WRITE_THROUGH, size_transport

KiB = 1024


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket, MemoryReactor]]:
    """A Twisted TCP connection on 127.0.0.1, tuned as for a transfer, and its peer's socket."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        peer = socket.create_connection(server.getsockname(), timeout=10)
        ours, _ = server.accept()
    reactor = MemoryReactor()
    transport = Connection(ours, Protocol(), reactor)
    transport.connected = True
    size_transport(transport, 512 * KiB)
    yield transport, peer, reactor
    peer.close()
    ours.close()


def receive(peer: socket.socket, count: int, transport: Connection | None = None) -> bytes:
    """``count`` bytes from ``peer``, sending what ``transport`` queued as the reactor would."""
    chunks: list[bytes] = []
    got = 0
    for _ in range(100_000):
        if got == count:
            return b"".join(chunks)
        if transport is not None and transport._tempDataLen + len(transport.dataBuffer):
            transport.doWrite()
        chunk = peer.recv(min(count - got, 1 << 20))
        assert chunk, "peer saw the connection close"
        chunks.append(chunk)
        got += len(chunk)
    raise AssertionError(f"only {got} of {count} bytes arrived")


def test_a_large_write_is_sent_at_once(pair: tuple[Connection, socket.socket, MemoryReactor]) -> None:
    transport, peer, reactor = pair
    data = os.urandom(256 * KiB)
    transport.write(data)
    assert transport not in reactor.getWriters()  # no poll, no epoll_ctl
    assert transport._tempDataLen == 0 and transport.dataBuffer == b""
    assert receive(peer, len(data)) == data


def test_what_the_socket_does_not_take_is_queued_in_order(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    transport, peer, reactor = pair
    first, second = os.urandom(16 << 20), os.urandom(1 << 20)
    transport.write(first)  # more than the socket buffers take
    queued = transport._tempDataLen + len(transport.dataBuffer)
    assert 0 < queued < len(first)
    assert transport in reactor.getWriters()
    transport.write(second)  # behind the queue, not around it
    assert transport._tempDataLen + len(transport.dataBuffer) == queued + len(second)
    assert receive(peer, len(first) + len(second), transport) == first + second


def test_small_writes_are_queued_and_keep_their_place(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    transport, peer, reactor = pair
    head, body = b"HTTP/1.1 200 OK\r\n\r\n", os.urandom(WRITE_THROUGH)
    transport.write(head)
    transport.write(body)
    assert transport in reactor.getWriters()
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)  # nothing went out before the reactor's turn
    peer.setblocking(True)
    assert receive(peer, len(head) + len(body), transport) == head + body


def test_a_pull_producer_still_hears_when_the_queue_drains(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    transport, peer, _ = pair
    asked: list[str] = []

    @implementer(IPullProducer)
    class Pull:
        def resumeProducing(self) -> None:
            asked.append("more")

        def stopProducing(self) -> None:
            pass

    transport.registerProducer(Pull(), False)
    asked.clear()
    data = os.urandom(64 * KiB)
    transport.write(data)
    assert transport._tempDataLen == len(data)  # queued: doWrite asks for more once it is out
    assert receive(peer, len(data), transport) == data
    assert asked == ["more"]


def test_a_write_to_a_reset_connection_raises_nothing(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    transport, peer, reactor = pair
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # a reset
    transport.write(os.urandom(64 * KiB))
    transport.write(os.urandom(64 * KiB))
    assert isinstance(transport.doWrite(), Exception)  # the reactor then loses the connection


def test_send_limit_follows_the_size_and_write_is_wrapped_once(
    pair: tuple[Connection, socket.socket, MemoryReactor],
) -> None:
    transport, _, _ = pair
    wrapped = transport.write
    assert transport.SEND_LIMIT == 512 * KiB  # one send per read, not four
    size_transport(transport, 64 * KiB)
    assert transport.bufferSize == 64 * KiB
    assert transport.SEND_LIMIT == 128 * KiB  # never below Twisted's own
    assert transport.write is wrapped


def test_other_transports_are_only_sized() -> None:
    transport = StringTransport()
    size_transport(transport, 256 * KiB)
    assert transport.bufferSize == 256 * KiB  # type: ignore[attr-defined]
    assert "write" not in vars(transport)
