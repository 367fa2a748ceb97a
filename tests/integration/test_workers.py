"""``[server] workers = N``: a supervisor and N relay processes on one listening socket.

End to end with real processes (``twistd -n s3relay``, moto behind it): the
workers share the load, /metrics counts all of them, SIGHUP and SIGTERM
reach all of them, a killed worker comes back.  Then the pure parts: the
control-pipe framing, the metrics sums, the config key, the log field.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import succeed
from twisted.internet.error import ProcessTerminated
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from s3relay.access.ratelimit import WORKER_ENV, WORKERS_ENV, Share
from s3relay.config import ConfigError, load_config, parse_config
from s3relay.logs import observer
from s3relay.ops.metrics import RelayMetrics
from s3relay.s3 import sigv4
from s3relay.workers.link import MAX_FRAME, Frames, frame, worker_endpoint
from s3relay.workers.metricsum import Totals, parse
from s3relay.workers.pool import (
    BACKOFF_FIRST,
    MAX_FAILURES,
    READINESS_POLL,
    STABLE_AFTER,
    STOP_MARGIN,
    WorkerPool,
    limits_below,
)
from s3relay.workers.process import PRIVATE_ENV, worker_command
from s3relay.workers.reports import METRICS_TIMEOUT
from tests import harness
from tests.integration.conftest import CLIENT_KEY, boto_client, relay_config, works
from tests.rawclient import sign

NEW_KEY = ("AKIDRELAYWORKERS0001", "workers-secret-0001")
LISTENING = re.compile(r"worker (\d+) \(pid (\d+)\) listening")


def listening(relay: harness.Relay) -> dict[int, int]:
    """Worker index -> pid of its latest process that reported listening."""
    pids: dict[int, int] = {}
    for record in relay.records():
        match = LISTENING.fullmatch(record["message"])
        if match and "worker" not in record:
            pids[int(match[1])] = int(match[2])
    return pids


def burst_served(relay: harness.Relay, sockets: list[socket.socket]) -> list[int]:
    """Send a request on each of ``sockets`` (connected, maybe TLS) at once,
    close them; the worker that answered each."""
    mark = len(relay.records())
    try:
        for s in sockets:
            s.sendall(b"GET /burst HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for s in sockets:
            assert s.recv(100).startswith(b"HTTP/1.1 403 ")

        def served() -> list[int]:
            return [r["worker"] for r in relay.records()[mark:] if "access" in r]
        assert harness.eventually(lambda: len(served()) == len(sockets)), served()
    finally:
        for s in sockets:
            s.close()
    return served()


class Supervised:
    """A relay with ``workers = 2``, its management port and its sd_notify socket."""

    def __init__(self, relay: harness.Relay, config: Path, text: str, metrics_port: int,
                 notify: socket.socket) -> None:
        self.relay = relay
        self.config = config
        self.text = text
        self.metrics_port = metrics_port
        self.notify = notify

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def ready(self) -> bool:
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    def sample(self, name: str) -> float:
        """The sum of the samples called ``name`` on /metrics."""
        status, text = self.get("/metrics")
        assert status == 200
        return sum(s.value for family in text_string_to_metric_families(text.decode())
                   for s in family.samples if s.name == name)

    def requests_counted(self) -> float:
        return self.sample("s3relay_requests_total")

    def listening(self) -> dict[int, int]:
        return listening(self.relay)

    def messages(self, since: int = 0) -> list[dict[str, Any]]:
        return self.relay.records()[since:]

    def notified(self) -> bytes:
        return self.notify.recv(200)


def start_supervised(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
                     name: str) -> Supervised:
    port, metrics_port = harness.free_port(), harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key).replace(
        "[server]\n", "[server]\nworkers = 2\nshutdown_grace = 10\n", 1
    ) + f"\n[metrics]\nlisten = tcp:{metrics_port}:interface=127.0.0.1\n"
    path = workdir / f"notify-{name}"
    if path.exists():
        path.unlink()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(path))
    notify.settimeout(60)
    env = dict(harness.relay_env(), NOTIFY_SOCKET=str(path))
    relay = harness.start_relay(workdir, text, port, env=env)
    supervised = Supervised(relay, workdir / f"relay-{port}.ini", text, metrics_port, notify)
    assert supervised.notified() == b"READY=1\nSTATUS=listening", relay.output()[-3000:]
    return supervised


@pytest.fixture(scope="module")
def supervised(workdir: Path, s3: harness.S3Server,
               self_key: tuple[str, str]) -> Iterator[Supervised]:
    running = start_supervised(workdir, s3, self_key, "main")
    yield running
    harness.stop(running.relay.process)
    running.notify.close()


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        found.update(int(p) for p in text.split())
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def traffic(url: str, bucket: str, threads: int = 4, each: int = 10) -> int:
    """Requests from several clients at once (each with its own connections)."""
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            client = boto_client(url)
            for i in range(each):
                client.put_object(Bucket=bucket, Key=f"t{n}-{i}", Body=b"x" * 100)
        except BaseException as e:  # reported below
            errors.append(e)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    assert not errors, errors
    return threads * each


# -- end to end ---------------------------------------------------------------


def test_ready_once_every_worker_listens(supervised: Supervised) -> None:
    # READY=1 arrived (in start_supervised); by then both workers had reported.
    pids = supervised.listening()
    assert sorted(pids) == [1, 2]
    assert children(supervised.relay.process.pid) == set(pids.values())
    assert harness.eventually(supervised.ready)
    status, body = supervised.get("/readyz")
    checks = json.loads(body)["checks"]
    assert checks["workers"]["detail"] == "2 of 2 workers listening"
    assert checks["worker-checks"] == {"ok": True, "detail": "every worker's checks pass"}
    assert supervised.get("/healthz")[0] == 200


def test_serves_and_spreads_connections(supervised: Supervised, upstream: Any,
                                        bucket: str) -> None:
    client = boto_client(supervised.relay.url)
    client.put_object(Bucket=bucket, Key="hello", Body=b"from a worker")
    assert client.get_object(Bucket=bucket, Key="hello")["Body"].read() == b"from a worker"
    assert upstream.get_object(Bucket=bucket, Key="hello")["Body"].read() == b"from a worker"
    served: set[int] = set()
    for _ in range(10):  # the kernel decides; a few rounds of parallel clients
        mark = len(supervised.relay.records())
        traffic(supervised.relay.url, bucket)
        served |= {r["worker"] for r in supervised.messages(mark) if "access" in r}
        if served == {1, 2}:
            break
    assert served == {1, 2}
    # Every line is whole JSON with its worker (records() parses them all).
    access = [r for r in supervised.relay.records() if "access" in r]
    assert access and all(r["worker"] in (1, 2) for r in access)


def test_a_burst_of_connections_is_shared(supervised: Supervised) -> None:
    """Connections that arrive together (a client pool opening) go to both workers.

    Twisted's port accepts up to 100 queued connections per wake-up, so the
    first worker to wake took a whole burst: wrk's 16 keep-alive connections
    all landed on one worker in two runs of three, the other idle for good.
    A worker that gets no CPU during a burst (a loaded machine: the whole
    suite ran beside it in CI) still misses it: up to 5 bursts.
    """
    burst = 32
    splits = []
    for _ in range(5):
        sockets = [socket.create_connection(("127.0.0.1", supervised.relay.port), timeout=30)
                   for _ in range(burst)]
        by_worker = burst_served(supervised.relay, sockets)
        splits.append((by_worker.count(1), by_worker.count(2)))
        if min(splits[-1]) >= burst // 8:
            break
    assert min(splits[-1]) >= burst // 8, splits


def test_metrics_count_every_workers_requests(supervised: Supervised, bucket: str) -> None:
    before = supervised.requests_counted()
    mark = len(supervised.relay.records())
    sent = traffic(supervised.relay.url, bucket, threads=4, each=15)
    by_worker = [r["worker"] for r in supervised.messages(mark) if "access" in r]
    assert len(by_worker) == sent
    assert supervised.requests_counted() - before == sent
    # One page, one set of series: no duplicate HELP/TYPE lines.
    text = supervised.get("/metrics")[1].decode()
    assert text.count("# TYPE s3relay_requests_total counter") == 1
    assert "_created" not in text


def test_sighup_reaches_every_worker(supervised: Supervised) -> None:
    relay = supervised.relay
    assert not works(relay.url, NEW_KEY)
    mark = len(relay.records())
    supervised.config.write_text(
        supervised.text + f"\n[client:new]\naccess_key_id = {NEW_KEY[0]}\n"
        f"secret_access_key = {NEW_KEY[1]}\ncredentials = main\n"
    )
    relay.process.send_signal(signal.SIGHUP)
    assert supervised.notified() == b"RELOADING=1"
    assert supervised.notified() == b"READY=1"
    reloaded = {r.get("worker") for r in supervised.messages(mark)
                if r["message"].startswith("reloaded ")}
    assert reloaded == {1, 2}
    for _ in range(8):  # whichever worker takes the connection knows the key
        assert works(relay.url, NEW_KEY)

    # A config that does not load: the supervisor refuses it, no worker hears of it.
    mark = len(relay.records())
    supervised.config.write_text(supervised.text.replace("[upstream]", "[upstream]\nbogus = 1"))
    relay.process.send_signal(signal.SIGHUP)
    assert supervised.notified() == b"RELOADING=1"
    assert supervised.notified() == b"READY=1"
    after = supervised.messages(mark)
    assert any("reload refused" in r["message"] and "worker" not in r for r in after)
    assert not any(r["message"].startswith("reloaded ") for r in after)
    for _ in range(8):
        assert works(relay.url, NEW_KEY)
    supervised.config.write_text(supervised.text)


def test_killed_worker_is_restarted(supervised: Supervised, bucket: str) -> None:
    relay = supervised.relay
    before = supervised.requests_counted()
    restarts = supervised.sample("s3relay_worker_restarts_total")
    old = supervised.listening()
    os.kill(old[1], signal.SIGKILL)
    # Serving goes on (worker 2 accepts everything) while worker 1 comes back.
    client = boto_client(relay.url)
    for i in range(5):
        client.put_object(Bucket=bucket, Key=f"during-{i}", Body=b"still served")
    assert harness.eventually(lambda: supervised.listening().get(1) not in (None, old[1])), \
        relay.output()[-3000:]
    new = supervised.listening()
    assert new[2] == old[2] and not alive(old[1]) and alive(new[1])
    assert harness.eventually(supervised.ready)
    assert children(relay.process.pid) == set(new.values())
    logged = [r["message"] for r in relay.records() if "worker" not in r]
    assert any(m.startswith(f"worker 1 (pid {old[1]}) exited unexpectedly") for m in logged)
    assert any(m.startswith("restarting worker 1 in ") for m in logged)
    assert supervised.sample("s3relay_worker_restarts_total") == restarts + 1
    # Counters never go down (what worker 1 counted until its last scrape stays).
    assert supervised.requests_counted() >= before
    traffic(relay.url, bucket, threads=2, each=5)


def test_sigterm_drains_and_stops_every_worker(workdir: Path, s3: harness.S3Server,
                                               self_key: tuple[str, str], bucket: str,
                                               upstream: Any) -> None:
    stopping = start_supervised(workdir, s3, self_key, "stop")
    try:
        relay = stopping.relay
        traffic(relay.url, bucket, threads=2, each=3)
        pids = stopping.listening()
        # An upload under way when SIGTERM comes: its worker drains, it completes.
        data = os.urandom(1024 * 1024)
        url = f"{relay.url}/{bucket}/draining"
        headers = sign("PUT", url, {"content-length": str(len(data))}, sigv4.UNSIGNED_PAYLOAD,
                       CLIENT_KEY)
        upload = socket.create_connection(("127.0.0.1", relay.port), timeout=60)
        head = [f"PUT /{bucket}/draining HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
        upload.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data[:1000])
        assert harness.eventually(lambda: stopping.sample("s3relay_requests_in_flight") == 1)
        relay.process.send_signal(signal.SIGTERM)
        assert stopping.notified() == b"STOPPING=1"
        upload.sendall(data[1000:])
        answer = upload.recv(64)
        upload.close()
        assert answer.startswith(b"HTTP/1.1 200"), (answer, relay.output()[-3000:])
        assert upstream.get_object(Bucket=bucket, Key="draining")["Body"].read() == data
        # twistd re-raises the signal it stopped on; systemd counts SIGTERM as clean.
        assert relay.process.wait(60) in (0, -signal.SIGTERM)
        assert not any(alive(pid) for pid in pids.values())
        messages = [r["message"] for r in relay.records() if "worker" not in r]
        for index, pid in pids.items():
            assert f"worker {index} (pid {pid}) stopped" in messages
        assert not any("exited unexpectedly" in m for m in messages)
    finally:
        harness.stop(stopping.relay.process)
        stopping.notify.close()


def test_workers_stop_when_the_supervisor_dies(workdir: Path, s3: harness.S3Server,
                                               self_key: tuple[str, str]) -> None:
    """No orphans holding the port: the control pipe closes, each worker stops."""
    orphaned = start_supervised(workdir, s3, self_key, "orphan")
    try:
        pids = orphaned.listening()
        orphaned.relay.process.kill()
        orphaned.relay.process.wait(30)
        assert harness.eventually(lambda: not any(alive(pid) for pid in pids.values()), 60)
        gone = [r for r in orphaned.relay.records() if "supervisor is gone" in r["message"]]
        assert sorted(r["worker"] for r in gone) == [1, 2]
    finally:
        for pid in orphaned.listening().values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        orphaned.notify.close()


def test_one_worker_is_one_process(relay: harness.Relay) -> None:
    """The default (workers = 1): no supervisor, no extra process."""
    boto_client(relay.url).list_buckets()
    assert children(relay.process.pid) == set()


# -- the parts --------------------------------------------------------------------


def test_frames_split_anywhere() -> None:
    stream = frame(b"metrics") + frame(b"") + frame(b"notify READY=1\nSTATUS=x")
    for cut in range(len(stream) + 1):
        frames = Frames()
        got = frames.feed(stream[:cut]) + frames.feed(stream[cut:])
        assert got == [b"metrics", b"", b"notify READY=1\nSTATUS=x"]
    with pytest.raises(ValueError):
        Frames().feed((MAX_FRAME + 1).to_bytes(4, "big"))


def test_totals_add_up_workers_and_keep_the_dead() -> None:
    one, two = RelayMetrics(), RelayMetrics()
    for metrics, n in ((one, 3), (two, 4)):
        for _ in range(n):
            metrics.request_started()
            metrics.request_finished("GetObject", "GET", 200, 0.01, 0, 10)
    one.credentials_expiry("main", 2000.0)
    two.credentials_expiry("main", 1000.0)
    one.certificate_expiry(3000.0)
    two.certificate_expiry(4000.0)
    one.request_started()  # in flight in worker one
    totals = Totals()
    totals.add(parse(one.render()))
    totals.add(parse(two.render()))
    summed = {(f.name, s.name): s for f in parse(totals.render()) for s in f.samples}
    assert summed[("s3relay_requests", "s3relay_requests_total")].value == 7
    assert summed[("s3relay_sent_bytes", "s3relay_sent_bytes_total")].value == 70
    expiry = "s3relay_credentials_expiry_timestamp_seconds"
    assert summed[(expiry, expiry)].value == 1000.0  # the earliest
    certificate = "s3relay_tls_certificate_expiry_timestamp_seconds"
    assert summed[(certificate, certificate)].value == 3000.0
    assert summed[("s3relay_build_info", "s3relay_build_info")].value == 1.0
    inflight = "s3relay_requests_in_flight"
    assert summed[(inflight, inflight)].value == 1.0
    # A dead worker's counters stay, its gauges go.
    retired = Totals()
    retired.add(parse(one.render()), monotonic_only=True)
    kept = {f.name for f in parse(retired.render())}
    assert "s3relay_requests" in kept and inflight not in kept and expiry not in kept


def test_workers_key() -> None:
    base = "[upstream]\nurl = http://127.0.0.1:9000\nregion = us-east-1\n"
    assert parse_config(base).server.workers == 1
    assert parse_config("[server]\nworkers = 4\n" + base).server.workers == 4
    systemd = "[server]\nworkers = 2\nlisten = systemd:domain=INET6:index=0\n"
    assert parse_config(systemd + base).server.workers == 2
    for bad in ("0", "65", "two", "-1"):
        with pytest.raises(ConfigError) as raised:
            parse_config(f"[server]\nworkers = {bad}\n" + base)
        assert raised.value.key == "workers"
    with pytest.raises(ConfigError) as raised:
        parse_config("[server]\nworkers = 2\nlisten = unix:/tmp/s3relay.sock\n" + base)
    assert "tcp:, ssl: or systemd:" in str(raised.value)


def test_worker_command_and_environment() -> None:
    argv = ["/usr/bin/twistd3", "--nodaemon", "--pidfile=/run/x.pid",
            "--logger=s3relay.logs.observer", "s3relay", "--config", "/etc/s3relay/s3relay.ini"]
    command = worker_command("/etc/s3relay/s3relay.ini", 2, argv)
    assert "--logger=s3relay.logs.observer" in command
    assert command.index("--pidfile=") > command.index("--logger=s3relay.logs.observer")
    assert "--pidfile=/run/x.pid" not in command
    assert command[-5:] == ["s3relay", "--config", "/etc/s3relay/s3relay.ini", "--worker", "2"]
    assert "NOTIFY_SOCKET" in PRIVATE_ENV and "LISTEN_FDS" in PRIVATE_ENV


def test_log_lines_name_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    event = {"log_time": 0.0, "log_level": LogLevel.info, "log_namespace": "s3relay",
             "log_format": "hello"}
    out = io.StringIO()
    observer(out)(event)
    assert "worker" not in json.loads(out.getvalue())
    monkeypatch.setenv("S3RELAY_WORKER", "3")
    out = io.StringIO()
    observer(out)(event)
    assert json.loads(out.getvalue())["worker"] == 3


class FakeProcess:
    """The transport ``spawnProcess`` returns, recording what the pool does."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.written: list[bytes] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def writeToChild(self, fd: int, data: bytes) -> None:
        self.written.append(data)


class ProcessReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, FakeProcess, list[str], dict[int, Any]]] = []
        #: The environment of each spawned process, in the same order.
        self.environments: list[dict[str, str]] = []
        self.exits: list[int] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any = None,
                     path: Any = None, uid: Any = None, gid: Any = None, usePTY: bool = False,
                     childFDs: Any = None) -> FakeProcess:
        process = FakeProcess(1000 + len(self.spawned))
        protocol.makeConnection(process)
        self.spawned.append((protocol, process, args, childFDs))
        self.environments.append(dict(env or {}))
        return process


class FakePort:
    def __init__(self) -> None:
        self.reading = True
        self.listening = True

    def stopReading(self) -> None:
        self.reading = False

    def fileno(self) -> int:
        return 7

    def stopListening(self) -> None:
        self.listening = False


class FakeEndpoint:
    def __init__(self) -> None:
        self.port = FakePort()

    def listen(self, factory: Any) -> Any:
        return succeed(self.port)


def exited(protocol: Any, code: int = 1) -> None:
    protocol.processEnded(Failure(ProcessTerminated(code)))


@pytest.fixture
def pool_world(tmp_path: Path) -> Iterator[tuple[WorkerPool, ProcessReactor, list[bytes], Any]]:
    path = tmp_path / "relay.ini"
    path.write_text("[server]\nworkers = 2\nshutdown_grace = 5\n"
                    "[upstream]\nurl = http://127.0.0.1:9000\nregion = us-east-1\n")
    reactor = ProcessReactor()
    notified: list[bytes] = []
    ready: list[bool] = []
    endpoint = FakeEndpoint()
    pool = WorkerPool(str(path), load_config(str(path)),
                      endpoint, reactor,  # type: ignore[arg-type]
                      notified.append, lambda: ready.append(True), ["twistd"],
                      exit=reactor.exits.append)
    pool.startService()
    yield pool, reactor, notified, (endpoint, ready, path)
    if pool.running:
        pool.stopService()


def test_pool_starts_workers_on_the_shared_socket(pool_world: Any) -> None:
    pool, reactor, notified, (endpoint, ready, _) = pool_world
    assert not endpoint.port.reading  # the supervisor never accepts
    assert [args[-1] for _, _, args, _ in reactor.spawned] == ["1", "2"]
    fds = reactor.spawned[0][3]
    assert fds[3] == 7 and fds[0] == "w" and fds[4] == "r" and fds[1] == 1
    assert pool.check() == (False, "0 of 2 workers listening")
    reactor.spawned[0][0].childDataReceived(4, frame(b"notify READY=1\nSTATUS=listening"))
    assert not ready
    reactor.spawned[1][0].childDataReceived(4, frame(b"notify READY=1")[:3])
    reactor.spawned[1][0].childDataReceived(4, frame(b"notify READY=1")[3:])
    assert ready == [True] and pool.check()[0]


def test_pool_tells_each_worker_its_share_of_the_limits(pool_world: Any) -> None:
    pool, reactor, _, _ = pool_world
    shares = [(env[WORKER_ENV], env[WORKERS_ENV]) for env in reactor.environments]
    assert shares == [("1", "2"), ("2", "2")]
    assert [Share.of_process(env) for env in reactor.environments] == [Share(1, 2), Share(2, 2)]
    exited(reactor.spawned[0][0])
    reactor.advance(restart_delay(reactor))  # a restarted worker takes the same share
    assert reactor.spawned[-1][2][-1] == "1"
    assert Share.of_process(reactor.environments[-1]) == Share(1, 2)


def test_limits_below_the_workers_are_named() -> None:
    text = ("[server]\nworkers = 4\nmax_connections = 3\nrate = 100\nburst = 2\n"
            "max_concurrent_requests = 4\n"
            "[upstream]\nurl = http://127.0.0.1:9000\nregion = us-east-1\n"
            "[credentials:main]\naccess_key_id = AKIDWORKERS\nsecret_access_key = s\n"
            "[client:one]\naccess_key_id = AKIDONE\nsecret_access_key = s\n"
            "credentials = main\nmax_concurrent_requests = 1\n"
            "[client:wide]\naccess_key_id = AKIDWIDE\nsecret_access_key = s\n"
            "credentials = main\nrate = 0.5\nmax_concurrent_requests = 100\n"
            "[anonymous]\nbuckets = *\ncredentials = main\nrate = 8\n")
    config = parse_config(text)
    assert limits_below(config, 4) == [
        "[server] max_connections = 3",
        "[server] burst = 2",
        "[client:one] max_concurrent_requests = 1",
        "[client:wide] burst = 1",  # rate 0.5: the default burst, 1
    ]
    assert limits_below(config, 1) == []
    assert limits_below(parse_config(text.replace("workers = 4", "workers = 2")), 2) == [
        "[client:one] max_concurrent_requests = 1", "[client:wide] burst = 1",
    ]


def test_reload_warns_of_limits_below_the_workers(pool_world: Any) -> None:
    pool, reactor, _, (_, _, path) = pool_world
    path.write_text(path.read_text().replace("[server]\n", "[server]\nrate = 10\nburst = 1\n"))
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        assert pool.reload() is True
    finally:
        globalLogPublisher.removeObserver(seen.append)
    warned = [formatEvent(e) for e in seen if e.get("log_level") == LogLevel.warn]
    assert warned == ["limits below workers = 2 act as 2 for the relay (each worker takes"
                      " at least 1): [server] burst = 1"]


def restart_delay(reactor: ProcessReactor) -> float:
    [restart] = [c for c in reactor.getDelayedCalls()
                 if getattr(c.func, "__name__", "") == "_spawn"]
    return float(restart.getTime() - reactor.seconds())


def test_pool_restarts_with_backoff_then_gives_up(pool_world: Any) -> None:
    pool, reactor, notified, _ = pool_world
    restarts: list[bool] = []
    pool._restarted = lambda: restarts.append(True)
    exited(reactor.spawned[0][0])
    assert not pool.check()[0]
    delays = []
    for _ in range(MAX_FAILURES - 1):
        delay = restart_delay(reactor)
        delays.append(delay)
        reactor.advance(delay)
        assert reactor.spawned[-1][2][-1] == "1"  # worker 1 again
        exited(reactor.spawned[-1][0])
    assert delays == [BACKOFF_FIRST * 2**n for n in range(MAX_FAILURES - 1)]
    assert len(restarts) == MAX_FAILURES  # each restart scheduled is counted (s3relay_worker_restarts)
    reactor.advance(restart_delay(reactor))
    assert reactor.whenRunningHooks == []  # the reactor is not running here
    exited(reactor.spawned[-1][0])  # failure MAX_FAILURES + 1: give up
    assert [hook for hook, _, _ in reactor.whenRunningHooks] == [reactor.stop]
    for call, args, kwargs in reactor.triggers["after"]["shutdown"]:
        call(*args, **kwargs)
    assert reactor.exits == [1]


def test_pool_forgets_failures_of_a_worker_that_ran_well(pool_world: Any) -> None:
    pool, reactor, _, _ = pool_world
    for _ in range(MAX_FAILURES + 3):
        worker = reactor.spawned[-1][0] if reactor.spawned[-1][2][-1] == "1" else \
            reactor.spawned[0][0]
        worker.childDataReceived(4, frame(b"notify READY=1"))
        reactor.advance(STABLE_AFTER)
        exited(worker)
        reactor.advance(BACKOFF_FIRST)  # always the first backoff again
    assert reactor.whenRunningHooks == [] and reactor.exits == []


def test_pool_reload_checks_first_then_signals(pool_world: Any) -> None:
    pool, reactor, notified, (_, _, path) = pool_world
    for protocol, *_ in reactor.spawned:
        protocol.childDataReceived(4, frame(b"notify READY=1"))
    text = path.read_text()
    path.write_text(text + "bogus = 1\n")
    assert pool.reload() is False
    assert notified == [b"RELOADING=1", b"READY=1"]
    assert all(process.signals == [] for _, process, *_ in reactor.spawned)
    path.write_text(text)
    notified.clear()
    assert pool.reload() is True
    assert [process.signals for _, process, *_ in reactor.spawned] == [["HUP"], ["HUP"]]
    assert notified == [b"RELOADING=1"]
    reactor.spawned[0][0].childDataReceived(4, frame(b"notify RELOADING=1"))
    reactor.spawned[0][0].childDataReceived(4, frame(b"notify READY=1"))
    assert notified == [b"RELOADING=1"]
    reactor.spawned[1][0].childDataReceived(4, frame(b"notify READY=1"))
    assert notified == [b"RELOADING=1", b"READY=1"]


def test_pool_collects_metrics_and_keeps_dead_counters(pool_world: Any) -> None:
    pool, reactor, _, _ = pool_world
    pages = []
    for n, (protocol, process, *_) in enumerate(reactor.spawned):
        protocol.childDataReceived(4, frame(b"notify READY=1"))
        metrics = RelayMetrics(process_metrics=False)
        for _ in range(n + 1):
            metrics.request_started()
            metrics.request_finished("GetObject", "GET", 200, 0.01, 0, 1)
        pages.append(metrics.render())

    def counted(page: bytes) -> float:
        return sum(s.value for f in parse(page) if f.name == "s3relay_requests"
                   for s in f.samples)

    own = RelayMetrics(process_metrics=False).render()
    result = pool.collect(own)
    assert not result.called
    for (protocol, process, *_), page in zip(reactor.spawned, pages):
        assert process.written == [frame(b"readiness"), frame(b"metrics")]
        protocol.childDataReceived(4, frame(b"metrics " + page))
    assert counted(result.result) == 3
    # Worker 2 dies: its 2 requests stay counted; worker 1 does not answer in time.
    exited(reactor.spawned[1][0], 9)
    result = pool.collect(own)
    reactor.advance(METRICS_TIMEOUT)
    assert counted(result.result) == 3


def test_pool_readiness_follows_worker_reports(pool_world: Any) -> None:
    pool, reactor, _, _ = pool_world
    (one, first, *_), (two, second, *_) = reactor.spawned
    one.childDataReceived(4, frame(b"notify READY=1"))
    assert first.written == [frame(b"readiness")]  # asked at once
    assert pool.worker_checks() == (False, "worker 1: no report yet")
    one.childDataReceived(4, frame(b'readiness {"ready":true,"checks":{}}'))
    assert pool.worker_checks()[0] and not pool.check()[0]  # worker 2 is not up
    two.childDataReceived(4, frame(b"notify READY=1"))
    two.childDataReceived(4, frame(
        b'readiness {"ready":false,"checks":{"upstream":{"ok":false,"detail":"refused"},'
        b'"credentials":{"ok":true,"detail":"ok"}}}'))
    assert pool.check()[0]
    assert pool.worker_checks() == (False, "worker 2: upstream (refused)")
    reactor.advance(READINESS_POLL)
    assert first.written[-1] == second.written[-1] == frame(b"readiness")
    two.childDataReceived(4, frame(b'readiness {"ready":true,"checks":{}}'))
    assert pool.worker_checks()[0]
    for _ in range(6):  # worker 1 stops answering
        reactor.advance(READINESS_POLL)
        two.childDataReceived(4, frame(b'readiness {"ready":true,"checks":{}}'))
    ok, detail = pool.worker_checks()
    assert not ok and detail.startswith("worker 1: no report for ")


def test_pool_stop_terms_then_kills(pool_world: Any) -> None:
    pool, reactor, _, (endpoint, _, _) = pool_world
    done = pool.stopService()
    assert [process.signals for _, process, *_ in reactor.spawned] == [["TERM"], ["TERM"]]
    exited(reactor.spawned[0][0], 0)
    assert not done.called
    reactor.advance(5 + STOP_MARGIN)
    assert reactor.spawned[1][1].signals == ["TERM", "KILL"]
    exited(reactor.spawned[1][0], 9)
    assert done.called and not endpoint.port.listening
    assert len(reactor.spawned) == 2  # nothing restarted while stopping
    reactor.advance(60)
    assert len(reactor.spawned) == 2


def test_worker_endpoint_adopts_the_inherited_socket(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    for listen, tls in (("tcp:8080", False), (f"ssl:8443:privateKey={key}:certKey={cert}", True),
                        ("systemd:domain=INET6:index=0", False)):
        sock = socket.socket(socket.AF_INET6)
        reactor = MemoryReactorClock()
        server = parse_config(f"[server]\nlisten = {listen}\n[upstream]\n"
                              "url = http://127.0.0.1:9000\nregion = us-east-1\n").server
        fd = os.dup(sock.fileno())
        endpoint = worker_endpoint(reactor, server, lambda: None, fd)
        endpoint.listen(Factory())
        [(adopted_fd, family, factory)] = reactor.adoptedPorts
        assert (adopted_fd, family) == (fd, socket.AF_INET6)
        assert ("TLS" in type(factory).__name__) == tls
        with pytest.raises(OSError):
            os.fstat(fd)  # closed once adopted (the reactor holds its own copy)
        assert reactor.tcpServers == []
        sock.close()


def with_workers(text: str) -> str:
    return text.replace("[server]\n", "[server]\nworkers = 2\n", 1)


def both_listening(relay: harness.Relay) -> None:
    """Wait until both workers accept: the port answers as soon as the supervisor
    bound it, and a worker that came up first would take every connection."""
    assert harness.eventually(lambda: set(listening(relay)) == {1, 2}), relay.output()[-2000:]


def test_tls_listener_with_workers(workdir: Path, s3: harness.S3Server,
                                   self_key: tuple[str, str], tls_files: tuple[Path, Path],
                                   bucket: str) -> None:
    """Both workers serve TLS clients: boto3 end to end, then a burst of connections.

    One connection at a time is not spread: with both workers idle the kernel
    wakes them in the same order each time, so the same one tends to win.
    """
    cert, key = tls_files
    port = harness.free_port()
    listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    relay = harness.start_relay(workdir, with_workers(relay_config(s3, listen, self_key)),
                                port, "https")
    try:
        both_listening(relay)
        client = boto_client(relay.url, verify=str(cert))
        client.put_object(Bucket=bucket, Key="tls", Body=b"over TLS")
        assert client.get_object(Bucket=bucket, Key="tls")["Body"].read() == b"over TLS"
        client.close()  # an idle TLS keep-alive connection would hold up the stop
        context = ssl.create_default_context(cafile=str(cert))
        served: set[int] = set()
        for _ in range(5):  # a loaded machine may leave one worker unscheduled for a burst
            queued = [socket.create_connection(("127.0.0.1", port), timeout=30)
                      for _ in range(16)]
            served |= set(burst_served(
                relay, [context.wrap_socket(s, server_hostname="127.0.0.1") for s in queued]))
            if served == {1, 2}:
                break
        assert served == {1, 2}
    finally:
        harness.stop(relay.process)


def test_socket_activation_with_workers(workdir: Path, s3: harness.S3Server,
                                        self_key: tuple[str, str], bucket: str) -> None:
    from tests.integration.test_socket_activation import start_activated, wait_answering

    text = with_workers(relay_config(s3, "systemd:domain=INET:index=0", self_key))
    relay, sock = start_activated(workdir, text, "workers")
    sock.close()
    try:
        wait_answering(relay)
        client = boto_client(relay.url)
        client.put_object(Bucket=bucket, Key="activated-workers", Body=b"inherited")
        assert client.get_object(Bucket=bucket, Key="activated-workers")["Body"].read() == \
            b"inherited"
        assert harness.eventually(lambda: len(children(relay.process.pid)) == 2)
        for pid in children(relay.process.pid):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert not any(v.startswith((b"LISTEN_FDS=", b"LISTEN_PID=")) for v in environ)
    finally:
        harness.stop(relay.process)
