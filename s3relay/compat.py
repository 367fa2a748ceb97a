# -*- test-case-name: tests.unit.test_writethrough -*-
"""Large writes sent at once: how a TCP transport of a transfer is tuned."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from twisted.internet.abstract import FileDescriptor
from twisted.internet.tcp import Connection

#: Writes from this size up are sent at once when nothing is queued before them.
WRITE_THROUGH = 16 * 1024


def size_transport(transport: Any, size: int) -> None:
    """Have ``transport`` read ``size`` bytes at once, and send as much.

    ``size`` becomes Twisted's ``bufferSize`` (the read size, and the queue
    that pauses the producer) and its ``SEND_LIMIT`` (Twisted's 128 KiB would
    split each 512 KiB read into four sends, each a poll of its own).  A TCP
    connection also gets ``write_through``, once.
    """
    transport.bufferSize = size
    transport.SEND_LIMIT = max(size, FileDescriptor.SEND_LIMIT)
    if isinstance(transport, Connection) and "write" not in vars(transport):
        transport.write = partial(write_through, transport, transport.write)  # type: ignore[method-assign]


def write_through(transport: Connection, queue: Callable[[bytes], None], data: bytes) -> None:
    """Send ``data`` at once if nothing is queued; queue only what the socket did not take.

    Twisted queues every write and sends it when the reactor next polls.  For
    a large transfer that is two ``epoll_ctl`` calls, a poll and a Python
    round trip per chunk, and the chunk held in memory until then: half the
    relay's CPU per GiB (bench/README.md).  Small writes (headers, small
    bodies) are queued as before, so that they still leave together, and so
    is everything while a pull producer is registered: it is asked for more
    only when the queue drains.
    """
    if (len(data) >= WRITE_THROUGH and transport.connected and not transport._tempDataLen
            and transport.offset == len(transport.dataBuffer)
            and (transport.producer is None or transport.streamingProducer)):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):  # else the connection is lost: the queued write finds out
            if sent == len(data):
                return
            data = data[sent:]
    queue(data)
