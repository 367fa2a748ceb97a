#!/usr/bin/env python3
"""The floor under any relay built on twisted.web: the least a request can cost.

    python bench/floor.py answer PORT ROOT        # answer GET /bucket/key from ROOT
    python bench/floor.py proxy PORT UPSTREAM_URL # forward GETs with a pooled Agent

``run.py`` measures both next to the relay, in the same rounds, for 1 KiB
GETs.  ``answer`` is twisted.web's HTTP server and nothing else: it reads the
file and returns it.  ``proxy`` adds what every Twisted proxy needs -- a
pooled keep-alive ``Agent`` request per client request and the response
streamed back -- and nothing a relay must do: no signature check, no
re-signing, no policy, no access log, no metrics.  The relay's req/s as a
share of ``proxy`` is what s3relay's own work costs; ``proxy``'s own share
of nginx is as far as a single Twisted reactor could get at all.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Protocol
from twisted.web import server
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource


class Answer(Resource):
    isLeaf = True

    def __init__(self, root: Path) -> None:
        super().__init__()
        self._root = root

    def render_GET(self, request: Any) -> bytes:
        path = self._root / request.path.decode().lstrip("/")
        try:
            body = path.read_bytes()
        except OSError:
            request.setResponseCode(404)
            return b""
        request.setHeader(b"content-type", b"application/octet-stream")
        return body


class _Copy(Protocol):
    def __init__(self, request: Any) -> None:
        self._request = request

    def dataReceived(self, data: bytes) -> None:
        self._request.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        self._request.finish()


class Proxy(Resource):
    isLeaf = True

    def __init__(self, agent: Agent, upstream: bytes) -> None:
        super().__init__()
        self._agent = agent
        self._upstream = upstream

    def render_GET(self, request: Any) -> int:
        def answer(response: Any) -> None:
            request.setResponseCode(response.code)
            for name, values in response.headers.getAllRawHeaders():
                if name.lower() in (b"content-length", b"content-type", b"etag"):
                    request.responseHeaders.setRawHeaders(name, values)
            response.deliverBody(_Copy(request))

        def failed(failure: Any) -> None:
            request.setResponseCode(502)
            request.finish()

        sent = self._agent.request(b"GET", self._upstream + request.uri, Headers())
        sent.addCallbacks(answer, failed)
        return server.NOT_DONE_YET


def main(argv: list[str]) -> None:
    mode, port, where = argv[1], int(argv[2]), argv[3]
    if mode == "answer":
        resource: Resource = Answer(Path(where))
    else:
        pool = HTTPConnectionPool(reactor)
        pool.maxPersistentPerHost = 32
        resource = Proxy(Agent(reactor, pool=pool), where.rstrip("/").encode())
    site = server.Site(resource)
    site.log = lambda request: None  # type: ignore[method-assign]
    reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv)
