"""Canaries for the Twisted-private API s3relay relies on (``s3relay.compat``).

Each test fails when Twisted changes the private name or behaviour under it,
on the newest Twisted and on bookworm's 22.4 (``.ci/bookworm``); and one test
keeps private uses out of every other module.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import client
from twisted.web.test.requesthelper import DummyChannel

from s3relay import compat

PACKAGE = Path(__file__).resolve().parents[2] / "s3relay"
#: The modules allowed to touch Twisted-private names.
PRIVATE_OK = {PACKAGE / "compat.py", PACKAGE / "http" / "channel.py"}
#: Private names of the standard library, not Twisted's.
STDLIB_PRIVATE = {"_exit"}


def test_pool_builds_protocols_with_its_factory() -> None:
    pool = client.HTTPConnectionPool(MemoryReactorClock())
    assert pool._factory is compat.HTTP11ClientFactory
    built: list[object] = []

    def factory(*args: object, **kwargs: object) -> object:
        made = compat.HTTP11ClientFactory(*args, **kwargs)  # type: ignore[arg-type]
        built.append(made)
        return made

    class Endpoint:
        connected: list[object] = []

        def connect(self, protocol_factory: object) -> Deferred[object]:
            self.connected.append(protocol_factory)
            return Deferred()

    compat.use_client_factory(pool, factory)
    endpoint = Endpoint()
    pool.getConnection(("http", b"127.0.0.1", 9), endpoint)
    assert built and endpoint.connected == built, "the pool did not use the factory it was given"


def test_client_factory_takes_a_quiescent_callback_and_builds_http11() -> None:
    factory = compat.HTTP11ClientFactory(lambda protocol: None, "key")
    assert isinstance(factory.buildProtocol(None), compat.HTTP11ClientProtocol)


def test_parse_server_gives_ssl_port_options_and_keywords(tmp_path: Path) -> None:
    from tests.certs import make_certificate

    certificate, key = make_certificate(tmp_path, "127.0.0.1")
    (port, _, parsed), kwargs = compat.parse_server(
        f"ssl:8443:privateKey={key}:certKey={certificate}:interface=127.0.0.1:backlog=7"
    )
    assert port == 8443
    assert kwargs == {"interface": "127.0.0.1", "backlog": 7}
    for name in ("privateKey", "certificate", "extraCertChain", "dhParameters"):
        assert hasattr(parsed, name), f"Twisted's ssl options lost {name}"


def test_tls_handshake_state_is_readable() -> None:
    factory = TLSMemoryBIOFactory(CertificateOptions(), True, Factory())
    protocol = compat.TLSProtocol(factory, Protocol())
    assert issubclass(compat.TLSProtocol, TLSMemoryBIOFactory.protocol)
    assert hasattr(protocol, "_handshakeDone"), "Twisted renamed _handshakeDone"
    assert compat.handshake_done(protocol) is False
    assert compat.tls_failure_reason(protocol) is None


def test_ports_accept_in_batches_we_can_set() -> None:
    from twisted.internet import tcp

    port_source = ast.parse(Path(tcp.__file__).read_text())
    assigned = {
        node.attr for node in ast.walk(port_source)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
    }
    assert "numberAccepts" in assigned, "Twisted renamed Port.numberAccepts"
    assert callable(tcp.Port.doRead)

    class FakePort:
        numberAccepts = 100
        reads = 0

        def doRead(self) -> None:
            self.reads += 1
            seen.append(self.numberAccepts)

    seen: list[int] = []
    port = FakePort()
    compat.accept_one_per_wakeup(port)
    port.doRead()
    assert seen == [1] and port.reads == 1


def test_request_knows_when_its_client_is_gone() -> None:
    from twisted.web.server import Request

    request = Request(DummyChannel())
    assert compat.client_gone(request) is False
    request.connectionLost(Exception("gone"))  # type: ignore[arg-type]
    assert compat.client_gone(request) is True


def test_write_through_needs_the_queue_state_it_reads() -> None:
    from twisted.internet.abstract import FileDescriptor

    descriptor = FileDescriptor(MemoryReactorClock())
    for name in ("_tempDataLen", "offset", "dataBuffer", "producer", "streamingProducer"):
        assert hasattr(descriptor, name), f"Twisted renamed FileDescriptor.{name}"


def test_retry_reasons_are_where_they_were() -> None:
    from twisted.web import _newclient

    assert compat.RequestNotSent is _newclient.RequestNotSent
    assert issubclass(compat.RequestAborted, Exception)
    assert StringTransport  # the transport the channel tests drive


def _private_uses(path: Path) -> list[str]:
    uses = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("twisted") and any(
                p.startswith("_") for p in node.module.split(".")
            ):
                uses.append(f"{node.lineno}: from {node.module}")
            if node.module.startswith("twisted"):
                uses.extend(
                    f"{node.lineno}: import {a.name}" for a in node.names if a.name.startswith("_")
                )
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__") or node.attr in STDLIB_PRIVATE:
                continue
            owner = node.value
            # Its own class's state: self, cls, and another instance in a copy.
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls", "other"):
                continue
            uses.append(f"{node.lineno}: .{node.attr}")
    return uses


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p not in PRIVATE_OK),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_private_api_only_in_compat_and_the_channel(path: Path) -> None:
    assert _private_uses(path) == []


def test_the_private_use_scan_finds_private_uses(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "from twisted.web._newclient import X\nfrom twisted.web.client import _Y\n"
        "def f(pool):\n    pool._factory = 1\n    self._ok = 2\n"
    )
    assert _private_uses(source) == ["1: from twisted.web._newclient", "2: import _Y", "4: ._factory"]


def test_responses_keep_their_connection_header() -> None:
    from twisted.web._newclient import Request as ClientRequest
    from twisted.web.http_headers import Headers

    protocol = compat.HTTP11ClientProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    request = ClientRequest(b"GET", b"/k", Headers({b"host": [b"h"]}), None, persistent=True)
    responses: list[Any] = []
    protocol.request(request).addCallback(compat.keep_connection_header(protocol)).addCallback(
        responses.append
    )
    protocol.dataReceived(
        b"HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: 1\r\nContent-Length: 0\r\n\r\n"
    )
    (response,) = responses
    assert response.headers.getRawHeaders(b"connection") == [b"x-private"]
    assert response.headers.getRawHeaders(b"x-private") == [b"1"]
