#!/usr/bin/env python3
"""Per-request CPU of one signed 1 KiB GET through the relay's real Site, in memory.

    .venv/bin/python bench/inprocess.py                    # this tree
    .venv/bin/python bench/inprocess.py --source=/tmp/base # another copy (a baseline)
    .venv/bin/python bench/inprocess.py --calls            # and Python calls per request

The whole request path -- channel, resource (verify, policy, re-sign),
exchange, the upstream's HTTP client protocol, the response back -- runs over
``StringTransport``s on a ``MemoryReactorClock``: no sockets, no wrk, no
nginx, so a change to the request path can be judged on its own, without the
±30 % a loaded machine puts on ``run.py``'s 1 KiB GETs.  ``--calls`` counts
Python function calls per request with cProfile: deterministic, so two
trees compare even on a busy machine.  Trees from before the subpackage
layout (s3relay/resource.py with make_site) work too.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import pstats
import sys
import time
from pathlib import Path
from typing import Any, Callable
from unittest import mock

# ``--source DIR`` runs another copy of the code; on sys.path before s3relay.
_SOURCE = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--source=")),
               str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, _SOURCE)

import botocore.auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.testing import MemoryReactorClock, StringTransport  # noqa: E402
from twisted.web._newclient import HTTP11ClientProtocol, Request  # noqa: E402
from twisted.web.client import URI  # noqa: E402
from twisted.web.http_headers import Headers  # noqa: E402
from twisted.web.iweb import IAgent  # noqa: E402
from zope.interface import implementer  # noqa: E402

from s3relay.config import parse_config  # noqa: E402

CONFIG = """[server]
hostnames = relay.test
[upstream]
url = http://upstream.test:9000
region = us-east-1
[credentials:main]
access_key_id = AKIAUPSTREAMBENCH001
secret_access_key = upstream-bench-secret
[client:bench]
access_key_id = AKIDBENCHCLIENT00001
secret_access_key = client-bench-secret
credentials = main
"""
EPOCH = 1767323045.0
ANSWER = b'HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nETag: "e"\r\n\r\n' + b"x" * 1024


def build_site(clock: MemoryReactorClock, agent: IAgent) -> tuple[Any, Callable[[], Any]]:
    """The relay's Site for ``CONFIG``, and the upstream protocol factory, in
    whichever layout the tree has."""
    config = parse_config(CONFIG)
    try:
        from s3relay.credentials.service import static_only
        from s3relay.http.site import make_site
        from s3relay.ops.management import UpstreamHealth
        from s3relay.ops.metrics import RelayMetrics
        from s3relay.outcome import Monitor
        from s3relay.upstream.agent import BufferBudget, UpstreamProtocol
    except ImportError:  # before the subpackages
        from s3relay.exchange import Monitor  # type: ignore[no-redef]
        from s3relay.management import UpstreamHealth  # type: ignore[no-redef]
        from s3relay.metrics import RelayMetrics  # type: ignore[no-redef]
        from s3relay.resource import make_site  # type: ignore[no-redef]
        monitor = Monitor(RelayMetrics(process_metrics=False), UpstreamHealth(clock.seconds),
                          clock)
        return make_site(config, agent, clock, monitor), HTTP11ClientProtocol
    monitor = Monitor(RelayMetrics(process_metrics=False), UpstreamHealth(clock.seconds), clock)
    site = make_site(config, agent, clock, monitor, static_only(config))
    return site, lambda: UpstreamProtocol(lambda p: None, BufferBudget())


@implementer(IAgent)
class Upstream:
    """Each request on a new in-memory connection, answered by the caller."""

    def __init__(self) -> None:
        self.protocol: Callable[[], Any] = HTTP11ClientProtocol
        self.calls: list[Any] = []

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: Any = None) -> Any:
        protocol = self.protocol()
        protocol.makeConnection(StringTransport())
        answer = protocol.request(Request(method, URI.fromBytes(uri).originForm,
                                          headers or Headers(), bodyProducer, persistent=True))
        self.calls.append(protocol)
        return answer


def signed_get() -> bytes:
    request = AWSRequest(method="GET", url="http://relay.test/b/k", headers={"Host": "relay.test"})
    now = datetime.datetime.fromtimestamp(EPOCH, datetime.timezone.utc).replace(tzinfo=None)
    with mock.patch.object(botocore.auth, "get_current_datetime", lambda: now, create=True):
        botocore.auth.S3SigV4Auth(Credentials("AKIDBENCHCLIENT00001", "client-bench-secret"),
                                  "s3", "us-east-1").add_auth(request)
    lines = ["GET /b/k HTTP/1.1"] + [f"{k}: {v}" for k, v in request.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=_SOURCE, help="the tree to run (default: this one)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", action="store_true", help="also count Python calls per request")
    args = parser.parse_args()
    clock = MemoryReactorClock()
    clock.advance(EPOCH)
    upstream = Upstream()
    site, upstream.protocol = build_site(clock, upstream)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    client = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    channel.makeConnection(client)
    raw = signed_get()

    def one() -> None:
        client.clear()
        channel.dataReceived(raw)
        upstream.calls[-1].dataReceived(ANSWER)

    one()
    if not client.value().startswith(b"HTTP/1.1 200 "):
        raise SystemExit(f"the relay did not answer 200: {client.value()[:300]!r}")
    for _ in range(300):
        one()
    rounds = []
    for _ in range(args.rounds):
        start = time.process_time()
        for _ in range(args.requests):
            one()
        rounds.append((time.process_time() - start) / args.requests * 1e6)
    rounds.sort()
    print(f"{args.source}: {rounds[0]:.0f} us CPU per request (best of {args.rounds}), "
          f"median {rounds[len(rounds) // 2]:.0f}")
    if args.calls:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(1000):
            one()
        profile.disable()
        stats = pstats.Stats(profile, stream=io.StringIO())
        print(f"{stats.total_calls / 1000:.0f} Python calls per request")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
