"""A bounded load test through a real relay process with its default limits.

Hundreds of client connections are held open at once, each sending a mix of
small signed GET/PUT/HEAD/ListObjectsV2 (and 404) requests over keep-alive,
while a few large streamed PUTs and GETs run beside them.  Every answer is
checked (status, bytes or hash, ETag), the access log must hold exactly one
record per request with the status the client saw, and afterwards the relay
must hold no more descriptors or connections than before (the upstream
keep-alive pool aside, which is bounded by ``[upstream] max_connections``),
with its peak RSS under a generous bound: a leak and ballooning guard, not a
speed target (speed is bench/'s business).  moto, not the relay, is the slow
part here, so payloads are small and the request count moderate.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor

from s3relay.listen.endpoints import LISTEN_BACKLOG, listen_endpoint
from tests import harness
from tests.integration.conftest import CLIENT_KEY, relay_config
from tests.loadclient import Connection, MiB, Outcome, Workload

CONNECTIONS = 500
REQUESTS_PER_CONNECTION = 4
LARGE_SIZE = 32 * MiB
LARGE_PUTS = 2
LARGE_GETS = 2
SEEDS = 40
#: The relay idles at ~52 MiB (interpreter, Twisted, cryptography).
RSS_BOUND_KIB = 120 * 1024
#: [upstream] max_connections' default: idle pooled connections kept.
POOL_SIZE = 32
SECONDS = 150.0  # the whole run's bound; it takes far less


@pytest.fixture(scope="module")
def loaded(workdir: Path, s3: harness.S3Server,
           self_key: tuple[str, str]) -> Iterator[harness.Relay]:
    """A relay of its own (a clean access log and baseline), default limits."""
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key)
    relay = harness.start_relay(workdir, text, port)
    yield relay
    harness.stop(relay.process)


def wait_until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def quiet(pid: int) -> harness.Usage:
    """The fewest fds over a second: connections just closed are let go."""
    readings = []
    for _ in range(10):
        readings.append(harness.process_usage(pid))
        time.sleep(0.1)
    return min(readings, key=lambda u: u.fds)


async def run_load(relay: harness.Relay, work: Workload, large: bytes,
                   large_sha: str) -> tuple[list[Outcome], list[harness.Usage], int, int]:
    """The load: outcomes, usage samples taken meanwhile, connections seen at
    once, and how often the relay closed a keep-alive connection."""
    pid = relay.process.pid
    small = [Connection("127.0.0.1", relay.port) for _ in range(CONNECTIONS)]
    big = [Connection("127.0.0.1", relay.port) for _ in range(LARGE_PUTS + LARGE_GETS)]
    await asyncio.gather(*(c.open() for c in small + big))
    # Every connection is open before the first request: the relay holds them
    # all (those its listen queue dropped would meet a reset at their first).
    held = 0
    for _ in range(300):
        held = harness.process_usage(pid).accepted(relay.port)
        if held >= len(small) + len(big):
            break
        await asyncio.sleep(0.05)

    samples: list[harness.Usage] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            samples.append(harness.process_usage(pid))
            try:
                await asyncio.wait_for(done.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    async def client(index: int, connection: Connection) -> list[Outcome]:
        # The slot shifts with the connection, so every kind runs at every step.
        return [await work.one(connection, index + step)
                for step in range(REQUESTS_PER_CONNECTION)]

    sampler = asyncio.ensure_future(sample())
    jobs = [client(i, c) for i, c in enumerate(small)]
    jobs += [_single(work.large_put(c, f"large/put-{i}", large))
             for i, c in enumerate(big[:LARGE_PUTS])]
    jobs += [_single(work.large_get(c, "large/seed", large_sha, len(large)))
             for c in big[LARGE_PUTS:]]
    try:
        results = await asyncio.gather(*jobs)
    finally:
        done.set()
        await sampler
        await asyncio.gather(*(c.close() for c in small + big))
    reopened = sum(c.reopened for c in small + big)
    return [o for batch in results for o in batch], samples, held, reopened


async def _single(job: Any) -> list[Outcome]:
    return [await job]


def test_hundreds_of_connections_mixed_requests_and_large_transfers(
    loaded: harness.Relay, s3: harness.S3Server, upstream: Any, bucket: str,
) -> None:
    started = time.monotonic()
    pid = loaded.process.pid
    seeds = {f"seed/{i:03d}": os.urandom(512 + 97 * i) for i in range(SEEDS)}
    for key, data in seeds.items():
        upstream.put_object(Bucket=bucket, Key=key, Body=data)
    large = os.urandom(LARGE_SIZE)
    large_sha = hashlib.sha256(large).hexdigest()
    upstream.put_object(Bucket=bucket, Key="large/seed", Body=large)
    work = Workload("127.0.0.1", loaded.port, bucket, CLIENT_KEY, seeds)

    async def warm() -> list[Outcome]:
        connection = Connection("127.0.0.1", loaded.port)
        outcomes = [await work.one(connection, slot) for slot in range(len(work.KINDS))]
        await connection.close()
        return outcomes

    warmup = asyncio.run(warm())
    assert all(o.ok for o in warmup), [o for o in warmup if not o.ok]
    baseline = quiet(pid)

    outcomes, samples, held, reopened = asyncio.run(
        asyncio.wait_for(run_load(loaded, work, large, large_sha), SECONDS))
    elapsed = time.monotonic() - started

    # 1. Every request got the expected answer.
    failed = [o for o in outcomes if not o.ok]
    kinds = collections.Counter(o.kind for o in outcomes)
    print(f"\n{len(outcomes)} requests on {CONNECTIONS + LARGE_PUTS + LARGE_GETS} connections "
          f"({held} held at once) in {elapsed:.1f} s: {dict(kinds)}")
    assert not failed, f"{len(failed)} failed, e.g. {failed[:5]}"
    assert len(outcomes) == CONNECTIONS * REQUESTS_PER_CONNECTION + LARGE_PUTS + LARGE_GETS
    assert held >= CONNECTIONS + LARGE_PUTS + LARGE_GETS
    assert reopened == 0, f"the relay closed {reopened} keep-alive connections"

    # 2. What was stored is what was sent: every small PUT, the large ones whole.
    stored = {}
    for page in upstream.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="put/"):
        stored.update({item["Key"]: item["ETag"].strip('"') for item in page.get("Contents", [])})
    assert stored == work.puts
    for i in range(LARGE_PUTS):
        head = upstream.head_object(Bucket=bucket, Key=f"large/put-{i}")
        assert head["ContentLength"] == LARGE_SIZE
        assert head["ETag"].strip('"') == hashlib.md5(large).hexdigest()

    # 3. One access record per request, with the status the client saw.
    expected = {o.request_id: o for o in warmup + outcomes}
    assert None not in expected and len(expected) == len(warmup) + len(outcomes)
    assert wait_until(lambda: len(access(loaded)) >= len(expected), 30)
    records = access(loaded)
    assert len(records) == len(expected)
    for record in records:
        outcome = expected.pop(record["request_id"])
        assert (record["method"], record["status"]) == (outcome.method, outcome.status), record
    assert not expected
    statuses = collections.Counter(r["status"] for r in records)
    assert set(statuses) == {200, 404}

    # 4. Nothing held on to: client connections all gone, descriptors back to
    # the baseline but for idle pooled upstream connections (at most the pool).
    def settled() -> bool:
        now = harness.process_usage(pid)
        return (now.accepted(loaded.port) == 0
                and now.fds - now.to(s3.port) <= baseline.fds - baseline.to(s3.port))

    wait_until(settled, 30)
    final = quiet(pid)
    peak_fds = max(s.fds for s in samples)
    peak_connections = max(len(s.connections) for s in samples)
    print(f"relay fds: baseline {baseline.fds}, peak {peak_fds}, after {final.fds} "
          f"({final.to(s3.port)} pooled upstream connections, baseline {baseline.to(s3.port)}); "
          f"established peak {peak_connections}; RSS baseline {baseline.rss_kib // 1024} MiB, "
          f"peak {final.peak_rss_kib // 1024} MiB, after {final.rss_kib // 1024} MiB")
    assert final.accepted(loaded.port) == 0, "client connections left open"
    assert final.to(s3.port) <= POOL_SIZE, "upstream connections beyond the pool"
    leaked = (final.fds - final.to(s3.port)) - (baseline.fds - baseline.to(s3.port))
    assert leaked <= 0, f"{leaked} file descriptors leaked"

    # 5. Memory stayed bounded throughout (VmHWM: the peak, even between samples).
    assert final.peak_rss_kib < RSS_BOUND_KIB, f"peak RSS {final.peak_rss_kib} KiB"

    # 6. Still serving.
    after = asyncio.run(warm())
    assert all(o.ok for o in after), [o for o in after if not o.ok]


def test_large_puts_and_gets_alternating_on_one_connection(
    loaded: harness.Relay, upstream: Any, bucket: str,
) -> None:
    """An upload that ended while the upstream had it paused once left the
    connection unable to read its next request after a large download
    (found by bench/soak.py; the channel unit test pins the cause)."""
    large = os.urandom(MiB)
    large_sha = hashlib.sha256(large).hexdigest()
    upstream.put_object(Bucket=bucket, Key="alternate/seed", Body=large)
    work = Workload("127.0.0.1", loaded.port, bucket, CLIENT_KEY, {})

    async def alternate() -> list[Outcome]:
        connection = Connection("127.0.0.1", loaded.port)
        outcomes = []
        for _ in range(12):
            for job in (work.large_put(connection, "alternate/put", large),
                        work.large_get(connection, "alternate/seed", large_sha, len(large))):
                outcomes.append(await asyncio.wait_for(job, 20))
        await connection.close()
        assert connection.opened == 1
        return outcomes

    outcomes = asyncio.run(alternate())
    assert [o for o in outcomes if not o.ok] == []


def access(relay: harness.Relay) -> list[dict[str, Any]]:
    return [r["access"] for r in relay.records() if "access" in r]


@pytest.mark.parametrize("scheme", ["tcp", "ssl"])
@pytest.mark.parametrize("extra, backlog", [("", LISTEN_BACKLOG), (":backlog=7", 7)])
def test_listeners_queue_a_burst_of_connections(
    tls_files: tuple[Path, Path], scheme: str, extra: str, backlog: int
) -> None:
    """Twisted's default listen backlog (50) dropped connections of a burst the
    load test above makes; an explicit ``backlog=`` still wins."""
    cert, key = tls_files
    description = "tcp:0:interface=127.0.0.1" if scheme == "tcp" else \
        f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    reactor = MemoryReactor()
    listen_endpoint(reactor, description + extra).listen(Factory())
    [(_, _, queued, interface)] = reactor.tcpServers
    assert (queued, interface) == (backlog, "127.0.0.1")
