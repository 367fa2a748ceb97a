"""Soak: a real relay under steady mixed load for minutes, its RSS and fds sampled.

Starts moto (tests/harness.py, signature-checking, keep-alive) and a
``twistd -n s3relay`` with the test suite's config (default limits) on
127.0.0.1, then keeps ``--connections`` keep-alive client connections busy
with the load test's mix of small signed GET/PUT/HEAD/ListObjectsV2/404
requests (tests/loadclient.py, every answer checked), plus a large streamed
PUT and GET every ``--large-every`` seconds.  Every ``--interval`` seconds
it samples the relay's VmRSS, open fds and connections from /proc.

At the end it prints start/end/max RSS and fds, their drift per minute (a
least-squares slope, over the whole run and over its second half, when
allocator warm-up is over), the relay's fds at rest before and after (net
of idle pooled upstream connections, which ``[upstream] max_connections``
bounds), and the error count: requests with a wrong status or body, and
access-log records that do not match the requests one for one.  Exit status
1 when there was any error.  Not part of the test suite; see bench/SOAK.md.

    .venv/bin/python bench/soak.py                  # 5 minutes
    .venv/bin/python bench/soak.py --minutes 1 --json /tmp/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import harness  # noqa: E402
from tests.integration.conftest import CLIENT_KEY, relay_config  # noqa: E402
from tests.loadclient import Connection, MiB, Outcome, Workload  # noqa: E402

SEEDS = 40
#: Distinct keys the PUTs cycle through: moto lists in time linear in a
#: bucket's size, so an ever-growing bucket would slow the run down.
PUT_KEYS = 500
#: Examples of failed requests kept for the report.
EXAMPLES = 10


@dataclass
class Sample:
    seconds: float
    rss_kib: int
    fds: int
    client_connections: int
    upstream_connections: int
    requests: int


@dataclass
class Tally:
    requests: int = 0
    errors: int = 0
    examples: list[str] = field(default_factory=list)
    by_status: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, outcome: Outcome) -> None:
        self.requests += 1
        self.kinds[outcome.kind] += 1
        self.by_status[(outcome.method, outcome.status)] += 1
        if not outcome.ok:
            self.errors += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(f"{outcome.kind} {outcome.path}: {outcome.error}")


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def at_rest(pid: int, upstream_port: int) -> harness.Usage:
    """The relay's usage with no client connected: the fewest fds over 2 s."""
    readings = []
    for _ in range(20):
        readings.append(harness.process_usage(pid))
        time.sleep(0.1)
    return min(readings, key=lambda u: u.fds - u.to(upstream_port))


async def run(args: argparse.Namespace, relay: harness.Relay, s3_port: int, work: Workload,
              large: bytes) -> tuple[Tally, list[Sample]]:
    pid = relay.process.pid
    tally = Tally()
    samples: list[Sample] = []
    started = time.monotonic()
    stop_at = started + args.minutes * 60
    large_sha = hashlib.sha256(large).hexdigest()

    async def client(index: int) -> None:
        connection = Connection("127.0.0.1", relay.port)
        await connection.open()
        slot = index
        try:
            while time.monotonic() < stop_at:
                tally.add(await work.one(connection, slot))
                slot += 1
        finally:
            await connection.close()

    async def large_transfers() -> None:
        connection = Connection("127.0.0.1", relay.port)
        await connection.open()
        try:
            while time.monotonic() + args.large_every < stop_at:
                await asyncio.sleep(args.large_every)
                tally.add(await work.large_put(connection, "large/put", large))
                tally.add(await work.large_get(connection, "large/seed", large_sha, len(large)))
        finally:
            await connection.close()

    async def sample() -> None:
        while time.monotonic() < stop_at:
            usage = harness.process_usage(pid)
            samples.append(Sample(round(time.monotonic() - started, 1), usage.rss_kib,
                                  usage.fds, usage.accepted(relay.port), usage.to(s3_port),
                                  tally.requests))
            s = samples[-1]
            print(f"{s.seconds:7.1f} s  RSS {s.rss_kib / 1024:6.1f} MiB  fds {s.fds:4d}  "
                  f"clients {s.client_connections:3d}  upstream {s.upstream_connections:3d}  "
                  f"requests {s.requests:7d}  errors {tally.errors}", flush=True)
            await asyncio.sleep(min(args.interval, max(0.0, stop_at - time.monotonic())))

    await asyncio.gather(sample(), large_transfers(),
                         *(client(i) for i in range(args.connections)))
    return tally, samples


def soak(args: argparse.Namespace, s3: harness.S3Server, relay: harness.Relay) -> dict[str, Any]:
    upstream: Any = s3.client()
    bucket = "soak"
    upstream.create_bucket(Bucket=bucket)
    seeds = {f"seed/{i:03d}": os.urandom(512 + 97 * i) for i in range(SEEDS)}
    for key, data in seeds.items():
        upstream.put_object(Bucket=bucket, Key=key, Body=data)
    large = os.urandom(args.large_mib * MiB)
    upstream.put_object(Bucket=bucket, Key="large/seed", Body=large)
    work = Workload("127.0.0.1", relay.port, bucket, CLIENT_KEY, seeds, put_key_space=PUT_KEYS)

    async def warm() -> list[Outcome]:
        connection = Connection("127.0.0.1", relay.port)
        outcomes = [await work.one(connection, slot) for slot in range(len(work.KINDS))]
        await connection.close()
        return outcomes

    pid = relay.process.pid
    warmup = asyncio.run(warm())
    before = at_rest(pid, s3.port)
    tally, samples = asyncio.run(run(args, relay, s3.port, work, large))
    for outcome in warmup:
        tally.add(outcome)

    # The access log: one record per request, the same statuses.
    deadline = time.monotonic() + 30
    records = []
    while time.monotonic() < deadline:
        records = [r["access"] for r in relay.records() if "access" in r]
        if len(records) >= tally.requests:
            break
        time.sleep(0.2)
    logged = collections.Counter((r["method"], r["status"]) for r in records)
    log_mismatch = sum((logged - tally.by_status).values()) + sum(
        (tally.by_status - logged).values())
    if log_mismatch:
        tally.examples.append(f"access log {dict(logged)} != requests {dict(tally.by_status)}")

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and harness.process_usage(pid).accepted(relay.port):
        time.sleep(0.1)
    after = at_rest(pid, s3.port)

    def series(values: list[tuple[float, float]]) -> dict[str, float]:
        half = [p for p in values if p[0] >= values[-1][0] / 2]
        return {
            "start": values[0][1], "end": values[-1][1], "max": max(v for _, v in values),
            "drift_per_min": round(slope_per_minute(values), 2),
            "drift_per_min_second_half": round(slope_per_minute(half), 2),
        }

    duration = samples[-1].seconds if samples else 0.0
    return {
        "minutes": args.minutes,
        "connections": args.connections,
        "requests": tally.requests,
        "requests_per_second": round(tally.requests / duration, 1) if duration else 0.0,
        "kinds": dict(tally.kinds),
        "errors": tally.errors + log_mismatch,
        "request_errors": tally.errors,
        "access_log_mismatches": log_mismatch,
        "examples": tally.examples,
        "rss_mib": {k: round(v / 1024, 1) if k.startswith(("start", "end", "max")) else
                    round(v / 1024, 3) for k, v in
                    series([(s.seconds, s.rss_kib) for s in samples]).items()},
        "fds": series([(s.seconds, s.fds) for s in samples]),
        "peak_rss_mib": round(harness.process_usage(pid).peak_rss_kib / 1024, 1),
        "at_rest_before": {"fds": before.fds, "rss_mib": round(before.rss_kib / 1024, 1),
                           "pooled_upstream": before.to(s3.port)},
        "at_rest_after": {"fds": after.fds, "rss_mib": round(after.rss_kib / 1024, 1),
                          "pooled_upstream": after.to(s3.port),
                          "clients": after.accepted(relay.port)},
        "fds_leaked": (after.fds - after.to(s3.port)) - (before.fds - before.to(s3.port)),
        "samples": [asdict(s) for s in samples],
    }


def report(result: dict[str, Any]) -> None:
    rss, fds = result["rss_mib"], result["fds"]
    print(f"\n{result['requests']} requests in {result['minutes']} min on "
          f"{result['connections']} connections ({result['requests_per_second']} req/s): "
          f"{result['kinds']}")
    print(f"{'':10} {'start':>8} {'end':>8} {'max':>8} {'drift/min':>10} {'2nd half':>10}")
    print(f"{'RSS MiB':10} {rss['start']:8.1f} {rss['end']:8.1f} {rss['max']:8.1f} "
          f"{rss['drift_per_min']:10.3f} {rss['drift_per_min_second_half']:10.3f}")
    print(f"{'open fds':10} {fds['start']:8.0f} {fds['end']:8.0f} {fds['max']:8.0f} "
          f"{fds['drift_per_min']:10.2f} {fds['drift_per_min_second_half']:10.2f}")
    before, after = result["at_rest_before"], result["at_rest_after"]
    print(f"at rest before: {before['fds']} fds ({before['pooled_upstream']} pooled upstream), "
          f"RSS {before['rss_mib']} MiB; after: {after['fds']} fds "
          f"({after['pooled_upstream']} pooled upstream, {after['clients']} clients), "
          f"RSS {after['rss_mib']} MiB; fds leaked: {result['fds_leaked']}; "
          f"peak RSS (VmHWM) {result['peak_rss_mib']} MiB")
    print(f"errors: {result['errors']} ({result['request_errors']} requests, "
          f"{result['access_log_mismatches']} access-log mismatches)")
    for example in result["examples"]:
        print(f"  {example}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--large-mib", type=int, default=16)
    parser.add_argument("--large-every", type=float, default=10.0,
                        help="seconds between large PUT+GET pairs")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--workdir", type=Path, help="keep configs and logs here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="s3relay-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    s3 = harness.start_s3(workdir)
    try:
        self_key = s3.new_access_key()
        port = harness.free_port()
        relay = harness.start_relay(
            workdir, relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key), port)
        try:
            result = soak(args, s3, relay)
        finally:
            harness.stop(relay.process)
    finally:
        harness.stop(s3.process)
    report(result)
    print(f"(logs in {workdir})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    ok = result["errors"] == 0 and result["fds_leaked"] <= 0 and not result["at_rest_after"][
        "clients"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
