"""An in-memory relay: its real Site, channel, resource and Exchange, no sockets.

Client side: a ``StringTransport`` fed raw requests, signed by botocore's own
SigV4 signer at the fake clock's time.  Upstream side: Twisted's real HTTP/1.1
client protocol (the one the relay's pooled Agent runs) over a
``StringTransport`` per request, so the responses, body transports and
failures the Exchange gets are Twisted's own; the test reads the request off
that transport and writes the answer, cuts it, or never answers.  One
``MemoryReactorClock`` is the reactor and every clock.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import botocore.auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol, Request
from twisted.web.client import URI
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from s3relay.config import parse_config
from s3relay.credentials.service import static_only
from s3relay.http.channel import RelayChannel
from s3relay.http.site import RelaySite, make_site
from s3relay.ops.management import UpstreamHealth
from s3relay.ops.metrics import RelayMetrics
from s3relay.outcome import Monitor
from s3relay.upstream.agent import BufferBudget, UpstreamProtocol
from tests.unit.oracle import signing_at

CLIENT_KEY, CLIENT_SECRET = "AKIDCLIENT", "client-secret/0123456789abcdef"
UPSTREAM_KEY, UPSTREAM_SECRET = "AKIAUPSTREAM", "upstream-secret/0123456789abcdef"
HOST = "relay.test"
#: 2026-01-02T03:04:05Z: where the clock starts (the relay refuses a skewed signature).
EPOCH = 1767323045.0


def config_text(server: str = "", client: str = "") -> str:
    """A relay config: one client key re-signed with one static upstream key."""
    return f"""\
[server]
hostnames = {HOST}
{server}
[upstream]
url = http://upstream.test:9000
region = us-east-1

[credentials:main]
access_key_id = {UPSTREAM_KEY}
secret_access_key = {UPSTREAM_SECRET}

[client:alice]
access_key_id = {CLIENT_KEY}
secret_access_key = {CLIENT_SECRET}
credentials = main
{client}
"""


@dataclass
class Message:
    """One HTTP message as parsed off a transport (header names in lower case)."""

    head: bytes
    headers: dict[str, list[str]]
    body: bytes
    #: Whether the body is as long as its framing says.
    complete: bool

    @property
    def start_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    @property
    def status(self) -> int:
        return int(self.start_line.split(" ")[1])

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def parse_messages(data: bytes) -> list[Message]:
    """The HTTP/1.1 messages in ``data``, the last possibly incomplete.

    Bodies are framed by Content-Length or chunked; a request with neither
    and a 1xx response have none, another response runs to the end.
    """
    messages: list[Message] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            messages.append(Message(head, {}, b"", False))
            break
        headers: dict[str, list[str]] = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        message = Message(head, headers, b"", True)
        messages.append(message)
        length = message.header("content-length")
        if re.match(rb"HTTP/1\.[01] 1\d\d ", head) or (
            not head.startswith(b"HTTP/") and length is None
            and message.header("transfer-encoding") is None
        ):
            data = rest  # no body: an interim response (100 Continue), a GET
        elif length is not None:
            message.body, data = rest[: int(length)], rest[int(length):]
            message.complete = len(message.body) == int(length)
        elif "chunked" in (message.header("transfer-encoding") or ""):
            message.body, message.complete, data = _dechunk(rest)
        else:
            message.body, message.complete, data = rest, False, b""  # to the close
    return messages


def _dechunk(data: bytes) -> tuple[bytes, bool, bytes]:
    body = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            return body, False, b""
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body, data.startswith(b"\r\n"), data[2:]
        body, data = body + data[:size], data[size + 2:]


def sign(method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b"",
         when: float = EPOCH, key: str = CLIENT_KEY, secret: str = CLIENT_SECRET) -> bytes:
    """A raw request as an SDK would send it, SigV4-signed by botocore at ``when``."""
    all_headers = {"Host": HOST, **(headers or {})}
    if body or method in ("PUT", "POST"):
        all_headers["Content-Length"] = str(len(body))
    request = AWSRequest(method=method, url=f"http://{HOST}{path}", data=body, headers=all_headers)
    now = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).replace(tzinfo=None)
    with signing_at(now):
        botocore.auth.S3SigV4Auth(Credentials(key, secret), "s3", "us-east-1").add_auth(request)
    lines = [f"{method} {path} HTTP/1.1"] + [f"{n}: {v}" for n, v in request.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class UpstreamCall:
    """One request the relay sent upstream, on a connection of its own."""

    protocol: HTTP11ClientProtocol
    transport: StringTransport
    response: Deferred[IResponse]

    @property
    def request(self) -> Message:
        """What the upstream got so far (the body may still be arriving)."""
        return parse_messages(self.transport.value())[0]

    def respond(self, data: bytes) -> None:
        """Raw bytes from the upstream: a status line, headers, body bytes."""
        self.protocol.dataReceived(data)

    def lose(self, reason: BaseException | None = None) -> None:
        """The connection ends (cleanly unless ``reason`` says otherwise), as TCP
        ends it: the registered producer (a request body) is stopped first."""
        if self.transport.producer is not None:
            self.transport.producer.stopProducing()
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))

    @property
    def aborted(self) -> bool:
        """Whether the relay gave up on this request (cancel aborts the connection)."""
        return bool(self.transport.disconnected)


@implementer(IAgent)
class MemoryUpstream:
    """An IAgent that puts each request on a new in-memory connection."""

    def __init__(self) -> None:
        self.calls: list[UpstreamCall] = []

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: IBodyProducer | None = None) -> Deferred[IResponse]:
        # The relay's own upstream protocol, as its pool builds it.
        protocol, transport = UpstreamProtocol(lambda p: None, BufferBudget()), StringTransport()
        protocol.makeConnection(transport)
        parsed = URI.fromBytes(uri)
        request = Request(method, parsed.originForm, headers or Headers(), bodyProducer,
                          persistent=True)
        response = protocol.request(request)
        self.calls.append(UpstreamCall(protocol, transport, response))
        return response


@dataclass
class Client:
    """One client connection to the relay."""

    channel: RelayChannel
    transport: StringTransport

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def received(self) -> bytes:
        return bytes(self.transport.value())

    def responses(self) -> list[Message]:
        return parse_messages(self.received())

    @property
    def aborted(self) -> bool:
        """Cut (``abortConnection``), as opposed to closed after the response."""
        return bool(self.transport.disconnected)


@dataclass
class Relay:
    """The relay's site on a fake clock, and the upstream it talks to."""

    config_ini: str = field(default_factory=config_text)
    clock: MemoryReactorClock = field(default_factory=MemoryReactorClock)
    upstream: MemoryUpstream = field(default_factory=MemoryUpstream)
    metrics: RelayMetrics = field(default_factory=lambda: RelayMetrics(process_metrics=False))
    site: RelaySite = field(init=False)
    _port: int = 40000

    def __post_init__(self) -> None:
        self.clock.advance(EPOCH)
        monitor = Monitor(self.metrics, UpstreamHealth(self.clock.seconds), self.clock)
        config = parse_config(self.config_ini)
        self.site = make_site(config, self.upstream, self.clock, monitor, static_only(config))

    def connect(self) -> Client:
        self._port += 1
        peer = IPv4Address("TCP", "127.0.0.1", self._port)
        channel: Any = self.site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        channel.makeConnection(transport)
        return Client(channel, transport)

    def sign(self, method: str, path: str, headers: Mapping[str, str] | None = None,
             body: bytes = b"", **options: Any) -> bytes:
        """``sign`` at the relay clock's current time."""
        return sign(method, path, headers, body, when=self.clock.seconds(), **options)
