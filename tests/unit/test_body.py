"""Tests for s3relay.body.producer.StreamingBody: buffering, backpressure, the held-back tail, failures."""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IConsumer
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer
from zope.interface.verify import verifyObject

from s3relay.body.plan import plan_body
from s3relay.body.producer import HIGH_WATER, BodyRejected, StreamingBody
from s3relay.s3 import sigv4
from s3relay.s3.errors import S3Error

BAD = S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")


class Source:
    """A fake BodySource: records pause and resume calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseBody(self) -> None:
        self.calls.append("pause")

    def resumeBody(self) -> None:
        self.calls.append("resume")


@implementer(IConsumer)
class Consumer:
    """A list consumer: every write kept separately."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        raise AssertionError("the Agent registers, not the body")

    def unregisterProducer(self) -> None:
        raise AssertionError("the Agent unregisters, not the body")

    @property
    def data(self) -> bytes:
        return b"".join(self.writes)


class Filter:
    """A pass-through BodyFilter that records calls and can fail on request."""

    def __init__(self, tail: bytes = b"", fail_finish: S3Error | None = None,
                 fail_feed_at: int | None = None, upper: bool = False) -> None:
        self.fed: list[bytes] = []
        self.finished = 0
        self.tail = tail
        self.fail_finish = fail_finish
        self.fail_feed_at = fail_feed_at
        self.upper = upper

    def feed(self, data: bytes) -> bytes:
        self.fed.append(data)
        if self.fail_feed_at is not None and len(self.fed) == self.fail_feed_at:
            raise BAD
        return data.upper() if self.upper else data

    def finish(self) -> bytes:
        self.finished += 1
        if self.fail_finish is not None:
            raise self.fail_finish
        return self.tail


class Harness:
    def __init__(self, body_filter: Any = None, high_water: int = 10, length: int = 100) -> None:
        self.source = Source()
        self.filter = body_filter if body_filter is not None else Filter()
        self.rejected: list[S3Error] = []
        self.body = StreamingBody(length, self.filter, self.source, self.rejected.append,
                                  high_water)
        self.consumer = Consumer()
        self.results: list[Any] = []

    def start(self) -> Deferred[None]:
        d = self.body.startProducing(self.consumer)
        d.addBoth(self.results.append)
        return d


def rejection(h: Harness) -> BodyRejected:
    assert len(h.results) == 1
    failure = h.results[0]
    assert isinstance(failure, Failure)
    assert failure.check(BodyRejected)
    return failure.value


def test_interfaces() -> None:
    h = Harness(length=1234)
    assert verifyObject(IBodyProducer, h.body)
    assert h.body.length == 1234
    assert HIGH_WATER == 256 * 1024
    assert StreamingBody(1, Filter(), Source(), lambda e: None)._high_water == HIGH_WATER


# -- before the Agent starts producing ---------------------------------------------------


def test_buffers_and_pauses_at_high_water() -> None:
    h = Harness(high_water=10)
    h.body.dataReceived(b"12345")
    assert h.source.calls == []  # 0 buffered, 5 held
    h.body.dataReceived(b"6789")
    assert h.source.calls == []  # 5 buffered, 4 held
    h.body.dataReceived(b"0")
    assert h.source.calls == []  # 9 buffered, 1 held
    h.body.dataReceived(b"abcde")
    assert h.source.calls == ["pause"]  # 10 buffered
    h.body.dataReceived(b"fghij")
    assert set(h.source.calls) == {"pause"}  # still paused (repeats are harmless)
    assert h.consumer.writes == []
    assert h.body.received == 20
    assert h.filter.fed == [b"12345", b"6789", b"0", b"abcde", b"fghij"]


def test_start_flushes_buffer_in_one_write_and_resumes() -> None:
    h = Harness(high_water=5)
    for piece in (b"aa", b"bb", b"cc", b"d"):
        h.body.dataReceived(piece)
    assert h.source.calls == ["pause"]
    d = h.start()
    assert h.consumer.writes == [b"aabbcc"]  # the last piece is held
    assert h.source.calls == ["pause", "resume"]
    assert not d.called


def test_start_with_nothing_buffered_resumes() -> None:
    h = Harness()
    h.start()
    assert h.consumer.writes == []
    assert h.source.calls == ["resume"]


def test_complete_before_start() -> None:
    h = Harness(Filter(tail=b"<tail>"))
    h.body.dataReceived(b"one")
    h.body.dataReceived(b"two")
    h.body.bodyComplete()
    assert h.filter.finished == 0  # nothing to check against before the Agent asks
    d = h.start()
    assert h.consumer.data == b"onetwo<tail>"
    assert h.consumer.writes == [b"one", b"two", b"<tail>"]
    assert h.results == [None] and d.called
    assert h.source.calls == []  # complete: nothing to resume
    assert h.filter.finished == 1


# -- after the Agent starts producing ------------------------------------------------------


def test_streams_holding_back_the_latest_piece() -> None:
    h = Harness(Filter(upper=True))
    d = h.start()
    h.body.dataReceived(b"ab")
    assert h.consumer.writes == []
    h.body.dataReceived(b"cd")
    assert h.consumer.writes == [b"AB"]
    h.body.dataReceived(b"ef")
    assert h.consumer.writes == [b"AB", b"CD"]
    assert not d.called
    h.body.bodyComplete()
    assert h.consumer.writes == [b"AB", b"CD", b"EF"]
    assert h.results == [None]
    assert h.filter.finished == 1


def test_single_byte_body_held_until_complete() -> None:
    h = Harness()
    h.start()
    h.body.dataReceived(b"x")
    assert h.consumer.writes == []
    h.body.bodyComplete()
    assert h.consumer.writes == [b"x"]
    assert h.results == [None]


def test_empty_output_pieces_do_not_release_the_held_piece() -> None:
    class Sometimes(Filter):
        def feed(self, data: bytes) -> bytes:
            super().feed(data)
            return b"" if data.startswith(b"-") else data

    h = Harness(Sometimes())
    h.start()
    h.body.dataReceived(b"payload")
    h.body.dataReceived(b"-framing")
    h.body.dataReceived(b"-more framing")
    assert h.consumer.writes == []  # "payload" is still the latest piece
    h.body.bodyComplete()
    assert h.consumer.writes == [b"payload"]


def test_no_write_after_start_buffers() -> None:
    h = Harness(high_water=1)
    h.start()
    for piece in (b"a", b"b", b"c", b"d"):
        h.body.dataReceived(piece)
    assert h.consumer.writes == [b"a", b"b", b"c"]
    assert h.source.calls == ["resume"]  # no high-water pause once streaming


def test_with_string_transport_consumer() -> None:
    transport = StringTransport()
    source = Source()
    body = StreamingBody(6, Filter(tail=b"!"), source, lambda e: None, 4)
    body.dataReceived(b"abc")
    body.dataReceived(b"def")
    done: list[Any] = []
    body.startProducing(transport).addBoth(done.append)
    assert transport.value() == b"abc"
    body.bodyComplete()
    assert transport.value() == b"abcdef!"
    assert done == [None]


# -- verification failures ----------------------------------------------------------------


def test_finish_failure_rejects_and_never_writes_the_held_piece() -> None:
    h = Harness(Filter(fail_finish=BAD))
    h.start()
    h.body.dataReceived(b"first")
    h.body.dataReceived(b"last")
    h.body.bodyComplete()
    assert h.consumer.writes == [b"first"]
    error = rejection(h)
    assert error.error is BAD
    assert error.args == ("BadDigest",)
    assert h.rejected == [BAD]
    assert h.body.error is BAD
    assert h.filter.finished == 1


def test_finish_failure_before_start() -> None:
    h = Harness(Filter(fail_finish=BAD), high_water=100)
    h.body.dataReceived(b"first")
    h.body.dataReceived(b"last")
    h.body.bodyComplete()
    h.start()
    assert h.consumer.data == b"first"  # the buffered part; "last" never goes out
    assert rejection(h).error is BAD
    assert h.rejected == [BAD]


def test_feed_failure_after_start() -> None:
    h = Harness(Filter(fail_feed_at=3))
    h.start()
    h.body.dataReceived(b"one")
    h.body.dataReceived(b"two")
    h.body.dataReceived(b"three")
    assert h.consumer.writes == [b"one"]
    assert rejection(h).error is BAD
    assert h.rejected == [BAD]
    h.body.dataReceived(b"four")  # ignored from now on
    h.body.bodyComplete()
    assert h.filter.fed == [b"one", b"two", b"three"]
    assert h.filter.finished == 0
    assert h.consumer.writes == [b"one"]
    assert h.rejected == [BAD] and len(h.results) == 1


def test_feed_failure_before_start() -> None:
    h = Harness(Filter(fail_feed_at=2))
    h.body.dataReceived(b"one")
    h.body.dataReceived(b"two")
    assert h.rejected == [BAD]
    h.body.bodyComplete()
    d = h.start()
    assert d.called
    assert rejection(h).error is BAD
    assert h.consumer.writes == []
    assert h.rejected == [BAD]  # called once, not again by startProducing
    assert "resume" not in h.source.calls


def test_real_sha256_filter() -> None:
    data = b"0123456789" * 1000
    wrong = hashlib.sha256(b"something else").hexdigest()
    verified = sigv4.Verified("AK", b"k", "s" * 64, "20240301T000000Z",
                              sigv4.Scope("20240301", "us-east-1", "s3"), wrong)
    _, body_filter = plan_body({}, verified, len(data))
    h = Harness(body_filter, high_water=HIGH_WATER, length=len(data))
    h.start()
    for i in range(0, len(data), 1000):
        h.body.dataReceived(data[i:i + 1000])
    h.body.bodyComplete()
    assert h.consumer.data == data[:-1000]  # one byte short at least
    assert rejection(h).error.code == "XAmzContentSHA256Mismatch"
    assert [e.code for e in h.rejected] == ["XAmzContentSHA256Mismatch"]


# -- the upstream or the client going away --------------------------------------------------


def test_stop_producing_then_complete_never_fires() -> None:
    h = Harness(Filter(tail=b"tail"))
    d = h.start()
    h.body.dataReceived(b"ab")
    h.body.dataReceived(b"cd")
    h.body.stopProducing()
    h.body.dataReceived(b"ef")
    h.body.bodyComplete()
    assert not d.called and h.results == []
    assert h.consumer.writes == [b"ab"]
    assert h.filter.fed == [b"ab", b"cd"]
    assert h.filter.finished == 0
    assert h.rejected == []


def test_stop_producing_then_client_lost_never_fires() -> None:
    h = Harness()
    d = h.start()
    h.body.stopProducing()
    h.body.clientLost(Failure(ConnectionLost()))
    assert not d.called


def test_stop_producing_then_bad_data_not_rejected() -> None:
    h = Harness(Filter(fail_feed_at=1))
    h.start()
    h.body.stopProducing()
    h.body.dataReceived(b"x")
    assert h.rejected == [] and h.results == []


def test_client_lost_errbacks() -> None:
    h = Harness()
    h.start()
    h.body.dataReceived(b"partial")
    reason = Failure(ConnectionLost("client went away"))
    h.body.clientLost(reason)
    assert len(h.results) == 1
    assert h.results[0] is reason
    h.body.bodyComplete()  # must not fire again
    h.body.dataReceived(b"more")
    assert len(h.results) == 1
    assert h.consumer.writes == []
    assert h.rejected == []


def test_client_lost_before_start_fails_start() -> None:
    h = Harness()
    h.body.dataReceived(b"partial")
    h.body.clientLost(Failure(ConnectionLost()))
    h.start()
    assert len(h.results) == 1 and isinstance(h.results[0], Failure)


def test_pause_and_resume_map_to_the_source() -> None:
    h = Harness()
    h.start()
    h.body.pauseProducing()
    h.body.resumeProducing()
    h.body.pauseProducing()
    assert h.source.calls == ["resume", "pause", "resume", "pause"]
    h.body.stopProducing()
    h.body.resumeProducing()
    assert h.source.calls == ["resume", "pause", "resume", "pause"]


# -- Hypothesis: any pieces, any start time -------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=12), max_size=12),
    start_at=st.integers(0, 12),
    high_water=st.integers(1, 40),
    fail=st.booleans(),
    tail=st.binary(max_size=3),
)
def test_any_sequence_holds_back_the_end(pieces: list[bytes], start_at: int, high_water: int,
                                         fail: bool, tail: bytes) -> None:
    h = Harness(Filter(tail=tail, fail_finish=BAD if fail else None), high_water=high_water)
    nonempty = [p for p in pieces if p]
    started = False
    for i, piece in enumerate(pieces):
        if i == start_at:
            h.start()
            started = True
        h.body.dataReceived(piece)
        sent = b"".join(nonempty[: max(0, len([p for p in pieces[: i + 1] if p]) - 1)])
        if started:
            assert h.consumer.data == sent
        else:
            assert h.consumer.writes == []
            assert ("pause" in h.source.calls) == (len(sent) >= high_water)
    assert h.body.received == sum(map(len, pieces))
    h.body.bodyComplete()
    if not started:
        h.start()
    everything = b"".join(pieces)
    if fail:
        assert h.consumer.data == b"".join(nonempty[:-1])
        assert rejection(h).error is BAD
        assert h.rejected == [BAD]
    else:
        assert h.consumer.data == everything + tail
        assert h.results == [None]
        assert h.rejected == []
    assert h.filter.finished == 1


class Holding(Filter):
    """Holds the whole body and releases it at ``finish`` (as a checked multi-delete does)."""

    def feed(self, data: bytes) -> bytes:
        self.fed.append(data)
        return b""

    def finish(self) -> bytes:
        self.finished += 1
        return b"".join(self.fed)


def verify_first(start_at_once: bool) -> tuple[StreamingBody, Consumer, list[Any]]:
    consumer, results = Consumer(), []
    body = StreamingBody(9, Holding(), Source(), lambda error: None, verify_first=True)

    def start(_: object) -> None:
        body.startProducing(consumer).addBoth(results.append)

    assert body.verified is not None
    if start_at_once:
        # A pooled upstream connection: the Agent starts the producer before
        # the verified callback returns, i.e. inside bodyComplete.
        body.verified.addCallback(start)
    body.dataReceived(b"<Del")
    body.dataReceived(b"ete/>")
    body.bodyComplete()
    if not start_at_once:
        start(None)  # a new upstream connection: the producer starts later
    return body, consumer, results


def test_verify_first_sends_the_body_once_when_the_upstream_starts_at_once() -> None:
    """It sent the released body a second time: Twisted's ExcessWrite, a dropped request."""
    body, consumer, results = verify_first(start_at_once=True)
    assert consumer.data == b"<Delete/>"
    assert results == [None] and body.sent == 9


def test_verify_first_sends_the_body_once_when_the_upstream_starts_later() -> None:
    body, consumer, results = verify_first(start_at_once=False)
    assert consumer.data == b"<Delete/>"
    assert results == [None] and body.sent == 9
