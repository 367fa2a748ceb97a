"""Limits and timeouts: parsing, the declared-size check, connection counting
and graceful shutdown (the channel's timers are in test_channel.py)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from s3relay.access.ratelimit import WHOLE, WORKER_ENV, WORKERS_ENV, Share
from s3relay.config import ConfigError, parse_config
from s3relay.http.connections import Connections, GracefulShutdown
from s3relay.http.limits import DEFAULT_LIMITS, Limits, check_declared_size
from s3relay.s3.errors import S3Error

MINIMAL = "[upstream]\nurl = http://127.0.0.1:9000\nregion = r1\n"


def limits_of(server: str) -> Limits:
    return parse_config(MINIMAL + "[server]\n" + server).server.limits


def test_defaults() -> None:
    limits = parse_config(MINIMAL).server.limits
    assert limits == DEFAULT_LIMITS
    assert limits.max_object_size == 5 * 1024**3
    assert limits.shutdown_grace == 30.0 and limits.connect_timeout == 10.0


def test_every_key_is_read() -> None:
    limits = limits_of(
        "connect_timeout = 2.5\nfirst_byte_timeout = 7\nheader_timeout = 3\n"
        "max_object_size = 1000\nmax_header_size = 2048\nmax_headers = 20\n"
        "max_url_length = 100\nmax_connections = 5\nshutdown_grace = 4\n"
    )
    assert limits == Limits(
        connect_timeout=2.5,
        first_byte_timeout=7.0,
        header_timeout=3.0,
        max_object_size=1000,
        max_header_size=2048,
        max_headers=20,
        max_url_length=100,
        max_connections=5,
        shutdown_grace=4.0,
    )
    assert isinstance(limits.max_object_size, int)


@pytest.mark.parametrize(
    "line, message",
    [
        ("header_timeout = soon", "[server] header_timeout: 'soon' is not a number"),
        ("first_byte_timeout = 0", "[server] first_byte_timeout: must be greater than 0"),
        ("max_connections = -1", "[server] max_connections: must be greater than 0"),
        ("max_object_size = 1.5", "[server] max_object_size: '1.5' is not a number"),
        ("max_url_length = 10", "[server] max_url_length: must be at least 16"),
        ("max_header_size = 100", "[server] max_header_size: must be at least 1024"),
        ("shutdown_grace = nan", "[server] shutdown_grace: must be greater than 0"),
        ("max_conections = 5", "[server] max_conections: unknown key"),
    ],
)
def test_bad_values_name_section_and_key(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "[server]\n" + line + "\n")
    assert str(info.value) == message


SMALL = Limits(max_object_size=100)


def test_declared_size_within_limit_passes() -> None:
    check_declared_size({}, 100, SMALL)
    check_declared_size({}, None, SMALL)
    # aws-chunked: the framing may make the wire body larger than the object.
    check_declared_size({"x-amz-decoded-content-length": ["100"]}, 300, SMALL)


@pytest.mark.parametrize(
    "headers, length",
    [({}, 101), ({"x-amz-decoded-content-length": ["101"]}, 50),
     ({"x-amz-decoded-content-length": ["999999999999"]}, None)],
)
def test_declared_size_above_limit_is_entity_too_large(
    headers: dict[str, list[str]], length: int | None
) -> None:
    with pytest.raises(S3Error) as info:
        check_declared_size(headers, length, SMALL)
    assert (info.value.code, info.value.status) == ("EntityTooLarge", 400)


class FakeChannel:
    """Built the way RelaySite builds channels: admitted, then counted."""

    def __init__(self, connections: Connections, max_connections: int) -> None:
        self.drained = self.aborted = False
        self.overloaded = connections.over_limit(max_connections)
        self.onClosed: Any = connections.closed
        connections.add(self)  # type: ignore[arg-type]

    def drain(self) -> None:
        self.drained = True

    def abort(self) -> None:
        self.aborted = True

    def lose(self) -> None:
        self.onClosed(self)


def test_connections_past_the_limit_are_marked_overloaded_and_bounded() -> None:
    connections = Connections()
    channels = []
    for _ in range(4):
        assert connections.may_accept(2)
        channels.append(FakeChannel(connections, 2))
    assert [c.overloaded for c in channels] == [False, False, True, True]
    assert not connections.may_accept(2)  # two refusals pending: close at once
    channels[0].lose()
    channels[2].lose()
    assert connections.may_accept(2)
    late = FakeChannel(connections, 2)
    assert late.overloaded is False


def test_a_worker_serves_its_share_of_max_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker 2 of 3 with max_connections = 5 serves 2 (5 = 2 + 2 + 1), tells 2
    more SlowDown, closes the next at once; one worker serves all 5."""
    from tests.unit.memory import Relay, config_text

    monkeypatch.setenv(WORKER_ENV, "2")
    monkeypatch.setenv(WORKERS_ENV, "3")
    relay = Relay(config_text("max_connections = 5"))
    assert relay.site.share == Share(2, 3)
    clients = [relay.connect() for _ in range(4)]
    assert [c.channel.overloaded for c in clients] == [False, False, True, True]
    assert relay.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)) is None
    clients[3].send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
    assert clients[3].received().startswith(b"HTTP/1.1 503 ")
    for gone in (clients[0], clients[3]):  # a served one, and the refused one closing
        gone.channel.connectionLost(Failure(ConnectionDone()))
    assert relay.connect().channel.overloaded is False
    assert relay.connect().channel.overloaded is True

    monkeypatch.delenv(WORKERS_ENV)
    whole = Relay(config_text("max_connections = 5"))
    assert whole.site.share is WHOLE
    assert [whole.connect().channel.overloaded for _ in range(6)] == [False] * 5 + [True]


def test_drain_waits_for_connections_then_stops_taking_any() -> None:
    clock = Clock()
    connections = Connections()
    channels = [FakeChannel(connections, 10) for _ in range(2)]
    done = connections.drain(30, clock)
    assert all(c.drained for c in channels)
    assert not connections.may_accept(10)
    fired: list[object] = []
    done.addCallback(fired.append)
    channels[0].lose()
    clock.advance(10)
    assert fired == []
    channels[1].lose()
    assert fired == [None]
    assert not any(c.aborted for c in channels)
    assert clock.getDelayedCalls() == []


def test_drain_aborts_what_is_left_after_the_grace() -> None:
    clock = Clock()
    connections = Connections()
    slow = FakeChannel(connections, 10)
    service = GracefulShutdown(connections, lambda: 5.0, clock)
    service.startService()
    done = service.stopService()
    fired: list[object] = []
    done.addCallback(fired.append)
    clock.advance(4.9)
    assert not slow.aborted and fired == []
    clock.advance(0.2)
    assert slow.aborted
    slow.lose()  # the abort's connectionLost
    assert fired == [None]


def test_drain_with_no_connections_is_immediate() -> None:
    fired: list[object] = []
    Connections().drain(30, Clock()).addCallback(fired.append)
    assert fired == [None]


REPO = Path(__file__).resolve().parents[2]


def test_every_key_is_documented_with_its_default() -> None:
    text = (REPO / "etc" / "s3relay" / "s3relay.ini").read_text()
    for f in fields(Limits):
        default = getattr(DEFAULT_LIMITS, f.name)
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        assert f"; {f.name} = {shown}\n" in text, f.name


def test_systemd_stop_timeout_outlasts_the_shutdown_grace() -> None:
    unit = (REPO / "systemd" / "s3relay.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("TimeoutStopSec="))
    seconds = float(line.split("=", 1)[1].rstrip("s"))
    assert seconds > DEFAULT_LIMITS.shutdown_grace + 5


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class _ImmediateResolver:
    """Resolves every name to itself at once, as an IPv4 address."""

    def resolveHostName(
        self, receiver: Any, hostName: str, portNumber: int = 0, *args: Any, **kwargs: Any
    ) -> Any:
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)
        receiver.addressResolved(IPv4Address("TCP", hostName, portNumber))
        receiver.resolutionComplete()
        return resolution


@implementer(IReactorPluggableNameResolver)
class ResolvingReactor(MemoryReactorClock):
    """A memory reactor with a name resolver (Twisted 22.4's has none)."""

    def __init__(self) -> None:
        super().__init__()
        self.nameResolver = _ImmediateResolver()

    def installNameResolver(self, resolver: Any) -> Any:
        old, self.nameResolver = self.nameResolver, resolver
        return old


def test_upstream_connect_timeout_reaches_the_connection_attempt() -> None:
    from twisted.web.http_headers import Headers

    from s3relay.config import UpstreamConfig
    from s3relay.upstream.agent import make_agent

    reactor = ResolvingReactor()
    upstream = UpstreamConfig("http://127.0.0.1:9", "r1", "path", 4)
    agent = make_agent(reactor, upstream, 2.5)
    agent.request(b"GET", b"http://127.0.0.1:9/b/k", Headers())
    host, port, _, timeout, _ = reactor.tcpClients[0]
    assert (host, port, timeout) == ("127.0.0.1", 9, 2.5)
