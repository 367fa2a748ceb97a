#!/usr/bin/env python3
"""Throughput, latency, CPU and memory benchmark: s3relay against nginx.

    .venv/bin/python bench/run.py                             # 1 GiB objects, 3 x 10 s of small GETs
    .venv/bin/python bench/run.py --size-mib 64 --seconds 3   # a quick run
    .venv/bin/python bench/run.py --skip-large --seconds 5    # small GETs only

One run starts, on 127.0.0.1 only, a fast upstream (Debian's nginx serving
and accepting PUTs from a temp dir), a reference proxy in front of it (a
second nginx process doing ``proxy_pass`` with keep-alive upstream
connections) and the relay in front of the same upstream as a real
``twistd -n s3relay`` process (and, with ``--workers N``, a second relay with
``workers = N``).  It then measures three paths to the same objects --
``direct`` (nginx itself), ``nginx`` (the reference proxy) and ``relay`` --
in alternating rounds, so that the load of a shared machine hits all alike:

* a large PUT, a large GET and the same GET as 8 parallel ranged streams
  (``--size-mib``, default 1 GiB) with ``curl``; MiB/s from the wall time;
  one warm-up round, then ``--repeat`` rounds; the median counts;
* 1 KiB GETs with ``wrk --latency`` (one thread, ``--connections``
  keep-alive connections, ``--seconds`` per round, ``--small-rounds``
  rounds): req/s, p50 and p99 latency;
* CPU seconds (utime+stime from /proc/PID/stat of the proxy's processes,
  master and workers) per GiB moved and per 1000 requests, for the nginx
  proxy and the relay; the upstream's own CPU for the direct path;
* peak RSS (VmHWM, the largest of the proxy's processes).

Then encryption at rest (``--no-encryption`` leaves it out): the same relay
process also covers a second bucket, ``bench-enc``, with an ``[encryption]``
section, and the large PUT, GET, 8 parallel PUTs and 8 parallel ranged GETs go
to the plain bucket and to the encrypted one in alternating rounds: encrypted
against plain MiB/s and CPU per GiB, and the relay's peak RSS.  nginx keeps no
``x-amz-meta-*`` headers of a PUT, so the object the encrypted GETs read is
sealed by this script (``s3relay.crypt``, as a relay PUT seals it) into the
nginx root, and nginx answers for it with the metadata headers a relay PUT
would have stored.

Next to them, for the small GETs, two floor servers (``floor.py``): twisted.web
answering from the files, and a bare pooled-Agent proxy -- how far anything
on twisted.web gets at all.  ``--tls`` has clients talk TLS to the nginx
proxy and the relay.

Every path gets the same request bytes: the presigned SigV4 URLs botocore
makes for the relay, so the relay verifies, authorizes, re-signs and streams
as for any client, while nginx ignores the query.  The table gives the
relay's ratio to the nginx proxy against the issue's targets.  Timings are
reported, never asserted: the exit status is non-zero only when something
failed (a bad status, a short body, a process that died).

``--profile DIR`` then runs a relay PUT, a GET and a few seconds of 1 KiB
GETs under ``py-spy record`` (not counted in the table) and prints the
hottest functions and lines; the raw stacks stay in DIR.
"""

from __future__ import annotations

import argparse
import collections
import filecmp
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
BUCKET = "bench"
BIG_KEY = "big.bin"
#: The bucket the relay's [encryption] section covers (``BUCKET`` stays plain).
ENC_BUCKET = "bench-enc"
#: The encrypted object the encrypted GETs read: sealed by this script.
SEALED_KEY = "sealed.bin"
#: The keys of the 8 parallel PUTs (in either bucket).
PART_KEY = "part-{}.bin"
SMALL_KEY = "small-1k.bin"
SMALL_SIZE = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
STREAMS = 8

CLIENT_KEY = ("AKIABENCHCLIENT00001", "benchclientsecret/" + "c" * 22)
UPSTREAM_KEY = ("AKIABENCHUPSTREAM001", "benchupstreamsecret/" + "u" * 20)

#: The paths measured, in the order each round runs them.
PATHS = ("direct", "nginx", "relay")

#: Targets from the issue (relay against the nginx proxy).
RSS_TARGET_MIB = 64
SMALL_TARGET = 0.25
THROUGHPUT_TARGET = 0.8
CPU_PER_GIB_TARGET = 2.0
#: Encrypted against plain throughput of the same relay (the encryption issue).
ENC_TARGET = 0.7

STARTUP_SECONDS = 30.0
PROFILE_RATE = 250
#: Reactor frames that call into protocols and timed calls (py-spy names).
DISPATCH = {"_PollLikeMixin._doReadOrWrite", "ReactorBase.runUntilCurrent"}
STOP_SECONDS = 10.0


# --------------------------------------------------------------------------
# small helpers


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class BenchError(Exception):
    """Something failed (not merely slow): the run's result is not valid."""


def scratch_base(size_mib: int) -> str | None:
    """/dev/shm when it can hold the test file and the objects stored from it
    (two copies for the plain paths, the sealed object and one encrypted PUT's).

    The upstream should be fast and steady: on a disk, nginx's PUTs of 1 GiB
    swing with dirty-page writeback and hide the relay's own cost.
    """
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    return "/dev/shm" if free > (5 * size_mib + 256) * MIB else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


def wait_for_port(port: int, process: subprocess.Popen[bytes], logfile: Path, what: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(
                f"{what} exited with {process.returncode} at startup:\n{tail(logfile)}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what}: nothing listening on {port} after {STARTUP_SECONDS}s")


def stop_process(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_SECONDS)


def ensure_tools(need_wrk: bool) -> dict[str, str | None]:
    """Paths of nginx, curl and wrk; apt-get installs missing ones when root."""
    packages = {"nginx": "nginx-light", "curl": "curl", "wrk": "wrk"}
    wanted = ["nginx", "curl"] + (["wrk"] if need_wrk else [])

    def find(name: str) -> str | None:
        return shutil.which(name) or next(
            (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
        )

    missing = [name for name in wanted if find(name) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing {', '.join(packages[m] for m in missing)} with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

        def apt(*words: str) -> int:
            command = ["apt-get", *words, "-qq"]
            return subprocess.run(command, stdout=subprocess.DEVNULL, env=env, timeout=600).returncode

        apt("update")
        for name in missing:
            if apt("install", "-y", packages[name]) != 0 and name == "nginx":
                apt("install", "-y", "nginx")
    tools = {name: find(name) for name in packages}
    for name in ("nginx", "curl"):
        if tools[name] is None:
            raise BenchError(
                f"{name} is required: apt-get install {packages[name]} (or run this as root)"
            )
    return tools


# --------------------------------------------------------------------------
# /proc readings of a process and its descendants


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (nginx's worker, the relay's workers)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(c) for c in handle.read().split())
            except OSError:
                pass
    return pids


def proc_status_kib(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return 0  # gone meanwhile
    raise BenchError(f"no {field_name} in /proc/{pid}/status")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` so far, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@dataclass
class PhaseStats:
    name: str
    peak_rss_kib: int
    cpu_seconds: float
    wall_seconds: float


@dataclass
class Monitor:
    """CPU (summed) and peak RSS (largest process) of one server's process tree."""

    name: str
    pid: int
    baseline_rss_kib: int = 0
    overall_peak_kib: int = 0
    phases: list[PhaseStats] = field(default_factory=list)

    def pids(self) -> list[int]:
        return process_tree(self.pid)

    def cpu(self) -> float:
        return sum(proc_cpu_seconds(p) for p in self.pids())

    def peak(self) -> int:
        return max(proc_status_kib(p, "VmHWM") for p in self.pids())

    def start(self) -> None:
        self.baseline_rss_kib = max(proc_status_kib(p, "VmRSS") for p in self.pids())
        self.overall_peak_kib = self.peak()
        for p in self.pids():
            reset_peak_rss(p)

    def phase(self, name: str, run: Callable[[], Any]) -> tuple[Any, float]:
        """Run ``run``; (its result, the CPU seconds this tree spent meanwhile)."""
        cpu0, t0 = self.cpu(), time.monotonic()
        result = run()
        wall = time.monotonic() - t0
        cpu = self.cpu() - cpu0
        peak = self.peak()
        self.overall_peak_kib = max(self.overall_peak_kib, peak)
        same = [p for p in self.phases if p.name == name]
        if same:  # a phase run in several rounds: add them up
            same[0].peak_rss_kib = max(same[0].peak_rss_kib, peak)
            same[0].cpu_seconds += cpu
            same[0].wall_seconds += wall
        else:
            self.phases.append(PhaseStats(name, peak, cpu, wall))
        for p in self.pids():
            reset_peak_rss(p)
        return result, cpu

    def finish(self) -> None:
        self.overall_peak_kib = max(self.overall_peak_kib, self.peak())


# --------------------------------------------------------------------------
# the processes


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1 (``--tls``): the client side of both proxies."""

    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path) -> TlsFiles:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        from tests.certs import (
            make_certificate,  # the tests' P-256 certificate for an IP
        )

        files = cls(*make_certificate(directory, "127.0.0.1"))
        # curl, urllib and http.client then trust it; wrk verifies nothing.
        os.environ["CURL_CA_BUNDLE"] = os.environ["SSL_CERT_FILE"] = str(files.cert)
        return files

    def nginx_values(self) -> dict[str, str]:
        return {"LISTEN_SSL": " ssl",
                "SSL_FILES": f"ssl_certificate {self.cert};\n        "
                             f"ssl_certificate_key {self.key};"}


def start_nginx(
    nginx: str, tmp: Path, template: str, values: dict[str, str], what: str
) -> tuple[subprocess.Popen[bytes], int]:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=30).stderr
    temp_paths = "".join(
        f"    {module}_temp_path {tmp}/{module};\n"
        for module in ("proxy", "fastcgi", "uwsgi", "scgi")
        if f"--without-http_{module}_module" not in built
    )
    user = "user root root;" if os.geteuid() == 0 else ""
    config = (BENCH / template).read_text()
    for name, value in {
        "USER": user, "TMP": str(tmp), "PORT": str(port), "TEMP_PATHS": temp_paths, **values,
    }.items():
        config = config.replace(f"@@{name}@@", value)
    conf = tmp / "nginx.conf"
    conf.write_text(config)
    logfile = tmp / "nginx.out"
    process = subprocess.Popen(
        [nginx, "-e", str(tmp / "nginx-error.log"), "-p", str(tmp), "-c", str(conf)],
        stdout=logfile.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_port(port, process, tmp / "nginx-error.log", what)
    return process, port


def start_relay(
    work: Path, upstream_port: int, workers: int = 1, source: Path = REPO, name: str = "relay",
    tls: TlsFiles | None = None, extra: str = "",
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A relay process in front of the upstream; ``source`` holds its code;
    ``extra``: more config sections (``[encryption]``)."""
    port = free_port()
    config = work / f"{name}.ini"
    workers_line = f"workers = {workers}\n" if workers != 1 else ""
    listen = (f"ssl:{port}:interface=127.0.0.1:privateKey={tls.key}:certKey={tls.cert}"
              if tls else f"tcp:{port}:interface=127.0.0.1")
    config.write_text(
        f"""\
[server]
listen = {listen}
region = us-east-1
idle_timeout = 300
{workers_line}
[upstream]
url = http://127.0.0.1:{upstream_port}
region = us-east-1
addressing = path
max_connections = 32

[credentials:up]
access_key_id = {UPSTREAM_KEY[0]}
secret_access_key = {UPSTREAM_KEY[1]}

[client:bench]
access_key_id = {CLIENT_KEY[0]}
secret_access_key = {CLIENT_KEY[1]}
credentials = up
{extra}"""
    )
    twistd = Path(sys.executable).parent / "twistd"
    path = os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, PYTHONPATH=f"{source}{os.pathsep}{path}" if path else str(source))
    logfile = work / f"{name}.log"
    process = subprocess.Popen(
        # The JSON access log, as the packaged unit runs it: logging is part
        # of each request's cost.
        [str(twistd), "-n", "--pidfile=", "--logger=s3relay.logs.observer", "s3relay",
         "--config", str(config)],
        stdout=logfile.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=work,
        start_new_session=True,
    )
    try:
        wait_for_port(port, process, logfile, name)
    except BenchError:
        stop_process(process)
        raise
    return process, port, logfile


def start_floor(work: Path, mode: str, where: str) -> tuple[subprocess.Popen[bytes], int]:
    """``floor.py`` in ``mode`` (answer: ``where`` is the root; proxy: the upstream URL)."""
    port = free_port()
    logfile = work / f"floor-{mode}.log"
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "floor.py"), mode, str(port), where],
        stdout=logfile.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=work, start_new_session=True,
    )
    try:
        wait_for_port(port, process, logfile, f"floor {mode}")
    except BenchError:
        stop_process(process)
        raise
    return process, port


def presigner(relay_port: int, scheme: str = "http") -> Callable[..., str]:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

    client = boto3.client(
        "s3",
        endpoint_url=f"{scheme}://127.0.0.1:{relay_port}",
        region_name="us-east-1",
        aws_access_key_id=CLIENT_KEY[0],
        aws_secret_access_key=CLIENT_KEY[1],
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

    def presign(method: str, key: str, bucket: str = BUCKET) -> str:
        operation = {"GET": "get_object", "PUT": "put_object", "HEAD": "head_object"}[method]
        return str(
            client.generate_presigned_url(
                operation, Params={"Bucket": bucket, "Key": key}, ExpiresIn=6 * 3600
            )
        )

    return presign


def on_port(url: str, port: int, scheme: str = "http") -> str:
    """``url`` (path and query unchanged) sent to another port of 127.0.0.1.

    The relay's SigV4 signature covers the Host header it was made for, so a
    URL moved to another port is good for nginx (which checks nothing), not
    for another relay: each relay gets URLs presigned for its own port.
    """
    parts = urlsplit(url)
    return f"{scheme}://127.0.0.1:{port}{parts.path}" + (f"?{parts.query}" if parts.query else "")


# --------------------------------------------------------------------------
# measurements


def make_data_file(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    block = os.urandom(MIB)
    with path.open("wb") as handle:
        remaining = size
        while remaining > 0:
            # A fresh random prefix per MiB, so that no two blocks are alike.
            chunk = os.urandom(64) + block[64 : min(MIB, remaining)]
            handle.write(chunk[:remaining])
            remaining -= len(chunk[:remaining])


def curl_base(curl: str, timeout: float) -> list[str]:
    fmt = "%{http_code} %{size_upload} %{size_download}"
    return [curl, "-sS", "--max-time", str(int(timeout)), "--noproxy", "*",
            "-o", "/dev/null", "-w", fmt]


def curl_transfer(
    curl: str, method: str, url: str, data: Path, size: int, timeout: float, streams: int = 1
) -> float:
    """A curl PUT, or a GET in ``streams`` parallel ranged parts, of ``size``
    bytes; returns the wall seconds until the last part is done."""
    base = curl_base(curl, timeout)
    commands: list[tuple[list[str], int, tuple[int, ...]]]
    if method == "PUT":
        commands = [(base + ["-T", str(data), url], size, (200, 201, 204))]
    elif streams == 1:
        commands = [(base + [url], size, (200,))]
    else:
        part = -(-size // streams)
        commands = []
        for first in range(0, size, part):
            last = min(first + part, size) - 1
            commands.append((base + ["-r", f"{first}-{last}", url], last - first + 1, (206,)))
    return run_curls(method, commands, timeout)


def curl_put_streams(curl: str, urls: list[str], part: Path, timeout: float) -> float:
    """PUTs of the file ``part`` to every URL in ``urls`` at once; the wall
    seconds until the last is done."""
    size = part.stat().st_size
    base = curl_base(curl, timeout)
    return run_curls("PUT", [(base + ["-T", str(part), url], size, (200, 201, 204))
                             for url in urls], timeout)


def run_curls(
    method: str, commands: list[tuple[list[str], int, tuple[int, ...]]], timeout: float
) -> float:
    """Run the curl ``commands`` (each with the bytes it must move and the
    statuses it may get) at once; the wall seconds until the last is done."""
    t0 = time.monotonic()
    running = [
        (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
         expect, codes)
        for cmd, expect, codes in commands
    ]
    failures = []
    for process, expect, codes in running:
        try:
            out, err = process.communicate(timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        parts = out.split()
        if process.returncode != 0 or len(parts) != 3:
            failures.append(f"curl {method} failed ({process.returncode}): {err.strip()}")
            continue
        code, uploaded, downloaded = int(parts[0]), int(parts[1]), int(parts[2])
        moved = uploaded if method == "PUT" else downloaded
        if code not in codes:
            failures.append(f"curl {method}: HTTP {code}")
        elif moved != expect:
            failures.append(f"curl {method}: moved {moved} bytes, expected {expect}")
    seconds = time.monotonic() - t0
    if failures:
        raise BenchError("; ".join(failures))
    return seconds


@dataclass
class SmallRun:
    rate: float
    requests: int
    p50_ms: float
    p99_ms: float
    summary: str
    cpu_seconds: float = 0.0


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk_run(wrk: str, url: str, seconds: int, connections: int) -> SmallRun:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency", url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = result.stdout
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip()}\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if not match or not count:
        raise BenchError(f"wrk printed no Requests/sec:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad and int(bad.group(1)):
        raise BenchError(f"wrk saw {bad.group(1)} non-2xx responses:\n{out}")
    pct = {
        m.group(1): _ms(m.group(2), m.group(3))
        for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    }
    errors = re.search(r"Socket errors:.*", out)
    summary = " ".join(line.strip() for line in out.splitlines() if "requests in" in line)
    if errors:
        summary += f"; {errors.group(0)}"
    return SmallRun(float(match.group(1)), int(count.group(1)), pct.get("50", float("nan")),
                    pct.get("99", float("nan")), re.sub(r"\s+", " ", summary))


def python_run(url: str, seconds: int) -> SmallRun:
    """Fallback without wrk: one keep-alive connection, sequential GETs."""
    import http.client

    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = kind(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    t0 = time.monotonic()
    try:
        while time.monotonic() < deadline and len(latencies) < 10_000_000:
            t = time.monotonic()
            conn.request("GET", target)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or len(body) != SMALL_SIZE:
                raise BenchError(f"GET {parts.path}: HTTP {response.status}, {len(body)} bytes")
            latencies.append(time.monotonic() - t)
    finally:
        conn.close()
    elapsed = time.monotonic() - t0
    latencies.sort()
    n = len(latencies)
    return SmallRun(n / elapsed, n, 1000 * latencies[n // 2], 1000 * latencies[min(n - 1, n * 99 // 100)],
                    f"{n} requests in {elapsed:.1f}s on 1 connection (python)")


def check_small(url: str, expected: bytes) -> None:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        body = response.read()
    if body != expected:
        raise BenchError(f"GET {url.split('?')[0]}: body differs ({len(body)} bytes)")


def put_small(url: str, data: bytes) -> None:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=data, method="PUT")
    with opener.open(request, timeout=10) as response:
        if response.status not in (200, 201, 204):
            raise BenchError(f"PUT {url.split('?')[0]}: HTTP {response.status}")


# --------------------------------------------------------------------------
# encryption at rest


def import_repo() -> None:
    """Make this tree's ``s3relay`` (and ``tests``) importable here."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Sealing:
    """The bench's side of encryption at rest: the key-encryption key the
    relay's ``[encryption]`` section names, and the data key and metadata of
    the object this script seals for the encrypted GETs.

    nginx's WebDAV PUT drops the ``x-amz-meta-*`` headers a relay PUT sends,
    so an object PUT through the relay cannot be read back through it.  The
    GETs read ``ENC_BUCKET/SEALED_KEY`` instead, sealed as a relay PUT seals
    a body (``KeyRing.seal_metadata`` for that bucket and key, then a
    ``Sealer`` over the plaintext) and served by an nginx location that adds
    the metadata headers to its GET and HEAD answers.
    """

    key_file: Path
    data_key: bytes = field(repr=False)
    metadata: dict[str, str]

    @classmethod
    def make(cls, work: Path) -> Sealing:
        import_repo()
        from s3relay.crypt.keys import generate_key_file, load_key_ring

        folder = work / "kek"
        folder.mkdir(exist_ok=True)
        key_file = folder / "bench.key"  # key id "bench"
        if not key_file.exists():
            generate_key_file(str(key_file))  # 32 random bytes as base64, mode 0600
        # Loaded as the relay loads [encryption] key_files.
        ring = load_key_ring("encryption", "key_files", [str(key_file)])
        data_key, metadata = ring.seal_metadata(ENC_BUCKET, SEALED_KEY.encode())
        return cls(key_file, data_key, metadata)

    def relay_section(self) -> str:
        return (f"\n[encryption]\nprefixes = {ENC_BUCKET}\nkey_files = {self.key_file}\n"
                f"allow_plaintext_reads = no\n")

    def nginx_location(self) -> str:
        """The upstream's location for the sealed object: the metadata on
        every answer (nginx itself answers HEAD with Content-Length and ETag,
        and honours Range and If-Match)."""
        headers = "".join(f'            add_header {name} "{value}" always;\n'
                          for name, value in self.metadata.items())
        return f"        location = /{ENC_BUCKET}/{SEALED_KEY} {{\n{headers}        }}\n"

    def seal(self, data: Path, stored: Path) -> None:
        """Write ``data`` to ``stored`` as the relay stores an encrypted object."""
        from s3relay.crypt.segments import Sealer

        sealer = Sealer(self.data_key)
        stored.parent.mkdir(parents=True, exist_ok=True)
        with data.open("rb") as source, stored.open("wb") as out:
            while chunk := source.read(MIB):
                out.write(sealer.feed(chunk))
            out.write(sealer.finish())


def file_sha256(path: Path, first: int = 0, length: int | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(first)
        left = path.stat().st_size - first if length is None else length
        while left > 0:
            chunk = handle.read(min(MIB, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def curl_sha256(curl: str, url: str, timeout: float, byte_range: str | None = None
                ) -> tuple[int, str]:
    """(bytes, sha256) of what curl downloads from ``url``; fails on an HTTP error."""
    command = [curl, "-sSf", "--max-time", str(int(timeout)), "--noproxy", "*", "-o", "-"]
    command += (["-r", byte_range] if byte_range else []) + [url]
    digest = hashlib.sha256()
    count = 0
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        while chunk := process.stdout.read(MIB):
            digest.update(chunk)
            count += len(chunk)
        err = process.stderr.read().decode(errors="replace").strip()
    if process.returncode != 0:
        raise BenchError(f"curl GET {url.split('?')[0]}"
                         + (f" -r {byte_range}" if byte_range else "")
                         + f" failed ({process.returncode}): {err}")
    return count, digest.hexdigest()


def curl_head(curl: str, url: str, timeout: float) -> dict[str, str]:
    """The response headers (lowercase names) of a HEAD; fails on an HTTP error."""
    result = subprocess.run(
        [curl, "-sSf", "--max-time", str(int(timeout)), "--noproxy", "*", "-I", url],
        capture_output=True, text=True, timeout=timeout + 30)
    if result.returncode != 0:
        raise BenchError(f"curl HEAD {url.split('?')[0]} failed ({result.returncode}): "
                         f"{result.stderr.strip()}")
    headers = {}
    for line in result.stdout.splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def check_encrypted_reads(
    curl: str, presign: Callable[..., str], data: Path, size: int, timeout: float
) -> None:
    """The sealed object through the relay: HEAD gives the plaintext size and
    no relay metadata, a GET and a ranged GET give the plaintext."""
    from s3relay.crypt.keys import META_PREFIX
    from s3relay.crypt.layout import SEGMENT

    head = curl_head(curl, presign("HEAD", SEALED_KEY, ENC_BUCKET), timeout)
    if head.get("content-length") != str(size):
        raise BenchError(f"HEAD {ENC_BUCKET}/{SEALED_KEY} through the relay: Content-Length "
                         f"{head.get('content-length')}, expected the plaintext size {size}")
    leaked = [name for name in head if name.startswith(META_PREFIX)]
    if leaked:
        raise BenchError(f"HEAD {ENC_BUCKET}/{SEALED_KEY} through the relay shows {leaked}")
    url = presign("GET", SEALED_KEY, ENC_BUCKET)
    count, digest = curl_sha256(curl, url, timeout)
    if (count, digest) != (size, file_sha256(data)):
        raise BenchError(f"GET {ENC_BUCKET}/{SEALED_KEY} through the relay: {count} bytes, "
                         f"sha256 {digest[:16]}..., not the plaintext's {size} bytes")
    # A range that starts and ends inside segments.
    first = min(size - 1, 3 * SEGMENT + 12345)
    last = min(size - 1, first + 2 * MIB + 777)
    count, digest = curl_sha256(curl, url, timeout, f"{first}-{last}")
    want = last - first + 1
    if (count, digest) != (want, file_sha256(data, first, want)):
        raise BenchError(f"GET {ENC_BUCKET}/{SEALED_KEY} bytes {first}-{last} through the "
                         f"relay: {count} bytes, sha256 {digest[:16]}..., not the plaintext's")
    log(f"encrypted GET through the relay: HEAD says {size} bytes; the object and bytes "
        f"{first}-{last} have the plaintext's sha256")


# --------------------------------------------------------------------------
# profiling


def profile_transfer(
    py_spy: str, pid: int, out: Path, transfer: Callable[[], float]
) -> tuple[float, Path]:
    """Run ``transfer`` with py-spy sampling the relay; (its result, the stacks)."""
    cmd = [py_spy, "record", "--pid", str(pid), "--format", "raw",
           "--rate", str(PROFILE_RATE), "--nonblocking", "-o", str(out)]
    spy = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        time.sleep(1.0)  # let it attach
        if spy.poll() is not None:
            said = spy.stdout.read().decode(errors="replace") if spy.stdout else ""
            raise BenchError(f"py-spy exited: {said}")
        seconds = transfer()
    finally:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(10)
    return seconds, out


def hot_functions(raw: Path) -> tuple[int, dict[str, collections.Counter[str]]]:
    """Non-idle samples and the top functions by self and total time, and top lines.

    py-spy's frames read ``function (file:line)``; a function's self time
    includes the C calls it makes (``socket.recv`` shows up as
    ``Connection.doRead``).
    """
    own: collections.Counter[str] = collections.Counter()
    work: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    lines: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        frames = [re.sub(r" \((?:/.*?/site-packages/|%s/)?" % re.escape(str(REPO)), " (", f)
                  for f in frames]
        if not frames:
            continue
        samples += count
        lines[frames[-1]] += count
        functions = [re.sub(r":\d+\)$", ")", f) for f in frames]
        own[functions[-1]] += count
        for name in set(functions):
            total[name] += count
        # What the reactor dispatched to: frames below its last dispatch frame.
        dispatch = [i for i, name in enumerate(functions) if name.split(" (")[0] in DISPATCH]
        if dispatch:
            below = functions[dispatch[-1] + 1 :]
        elif any(name.startswith("ReactorBase.mainLoop ") for name in functions):
            below = []  # in the reactor loop itself
        else:
            below = functions  # a stack py-spy could not read to the top
        for name in set(below):
            work[name] += count
    return samples, {"self": own, "total": total, "line": lines, "work": work}


# --------------------------------------------------------------------------
# the run


@dataclass
class Results:
    """Everything measured, by kind of transfer and path."""

    size_mib: int
    #: "PUT" / "GET" / "GET x8" -> path -> MiB/s per counted round
    rates: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: same keys -> CPU seconds of the path's server per GiB, per counted round
    cpu_per_gib: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: path ("direct", "nginx", "relay", "relay-Nw") -> one SmallRun per round
    small: dict[str, list[SmallRun]] = field(default_factory=dict)
    small_tool: str = ""
    workers: int = 1
    workers_note: str = ""
    peaks: dict[str, float] = field(default_factory=dict)  # MiB
    idle: dict[str, float] = field(default_factory=dict)  # MiB
    #: encryption at rest: "PUT" / "GET" / "PUT x8" / "GET x8" -> "relay-plain" /
    #: "relay-enc" -> MiB/s (and CPU seconds per GiB) per counted round
    enc_rates: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    enc_cpu_per_gib: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: the relay's peak RSS (MiB) during the transfers to either bucket
    enc_peaks: dict[str, float] = field(default_factory=dict)


def run(args: argparse.Namespace, work: Path) -> int:
    tools = ensure_tools(need_wrk=not args.no_wrk)
    nginx_bin = tools["nginx"] or "nginx"
    curl = tools["curl"] or "curl"
    size = args.size_mib * MIB
    timeout = max(120.0, size / (2 * MIB))  # even 2 MiB/s finishes
    procs: list[subprocess.Popen[bytes]] = []
    relay_log: Path | None = None
    results = Results(args.size_mib, workers=args.workers)
    try:
        root = work / "root"
        (root / BUCKET).mkdir(parents=True, exist_ok=True)
        # Encryption at rest: the relay's [encryption] section covers ENC_BUCKET.
        sealing = Sealing.make(work) if not (args.no_encryption or args.skip_large) else None
        upstream, upstream_port = start_nginx(
            nginx_bin, work / "nginx", "nginx.conf.template",
            {"ROOT": str(root), "SEALED_LOCATION": sealing.nginx_location() if sealing else ""},
            "nginx")
        procs.append(upstream)
        log(f"upstream nginx on 127.0.0.1:{upstream_port} (pid {upstream.pid}), root {root}")
        tls = TlsFiles.make(work) if args.tls else None
        client = "https" if tls else "http"
        proxy, proxy_port = start_nginx(
            nginx_bin, work / "nginx-proxy", "nginx-proxy.conf.template",
            {"UPSTREAM_PORT": str(upstream_port),
             **(tls.nginx_values() if tls else {"LISTEN_SSL": "", "SSL_FILES": ""})},
            "nginx proxy")
        procs.append(proxy)
        log(f"nginx proxy on 127.0.0.1:{proxy_port} (pid {proxy.pid})")
        relay, relay_port, relay_log = start_relay(
            work, upstream_port, tls=tls, extra=sealing.relay_section() if sealing else "")
        procs.append(relay)
        log(f"relay on 127.0.0.1:{relay_port} (pid {relay.pid}), log {relay_log}")
        relay_n: subprocess.Popen[bytes] | None = None
        relay_n_port = 0
        if args.workers > 1:
            try:
                relay_n, relay_n_port, _ = start_relay(work, upstream_port, args.workers,
                                                       name=f"relay-{args.workers}w", tls=tls)
                procs.append(relay_n)
                log(f"relay with workers = {args.workers} on 127.0.0.1:{relay_n_port} "
                    f"(pid {relay_n.pid})")
            except BenchError as e:
                first = str(e).strip().splitlines()
                results.workers_note = (f"skipped: the relay did not start with workers = "
                                        f"{args.workers} ({' '.join(first[-1:])[:160]})")
                log(results.workers_note)
        base: subprocess.Popen[bytes] | None = None
        base_port = 0
        if args.baseline:
            base, base_port, _ = start_relay(work, upstream_port, source=Path(args.baseline),
                                             name="relay-base", tls=tls)
            procs.append(base)
            log(f"baseline relay from {args.baseline} on 127.0.0.1:{base_port} (pid {base.pid})")
        ports = {"direct": upstream_port, "nginx": proxy_port, "relay": relay_port}
        floors: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        if not args.no_floor and not tls:  # plain HTTP servers: no floor for TLS
            for name, mode, where in (("twisted", "answer", str(root)),
                                      ("agent", "proxy", f"http://127.0.0.1:{upstream_port}")):
                floors[name] = start_floor(work, mode, where)
                procs.append(floors[name][0])
                log(f"floor {name} ({mode}) on 127.0.0.1:{floors[name][1]} "
                    f"(pid {floors[name][0].pid})")
        schemes = {"direct": "http", "nginx": client, "relay": client}
        presign = presigner(relay_port, client)
        base_presign = presigner(base_port, client) if base is not None else presign

        time.sleep(1.0)  # idle start
        monitors = {"direct": Monitor("upstream nginx", upstream.pid),
                    "nginx": Monitor("nginx proxy", proxy.pid),
                    "relay": Monitor("relay", relay.pid)}
        relay_n_name = f"relay-{args.workers}w"
        if relay_n is not None:
            monitors[relay_n_name] = Monitor(f"relay, workers = {args.workers}", relay_n.pid)
        if base is not None:
            monitors["relay-base"] = Monitor("baseline relay", base.pid)
        if sealing is not None:  # the same relay process, by bucket
            monitors["relay-plain"] = Monitor(f"relay, {BUCKET}", relay.pid)
            monitors["relay-enc"] = Monitor(f"relay, {ENC_BUCKET} (enc)", relay.pid)
        for name, (process, _) in floors.items():
            monitors[name] = Monitor(f"floor {name}", process.pid)
        for name, monitor in monitors.items():
            monitor.start()
            results.idle[name] = monitor.baseline_rss_kib / 1024
        log("idle RSS: " + ", ".join(f"{m.name} {m.baseline_rss_kib / 1024:.1f} MiB"
                                     for m in monitors.values()))

        def alive() -> None:
            for p in procs:
                if p.poll() is not None:
                    raise BenchError(f"process {p.pid} died with {p.returncode}")

        # Warm-up and correctness: a small PUT and GET through the relay,
        # then the same GET on every path.
        small = secrets.token_bytes(SMALL_SIZE)
        small_get = presign("GET", SMALL_KEY)
        put_small(presign("PUT", SMALL_KEY), small)
        for path, port in ports.items():
            check_small(on_port(small_get, port, schemes[path]), small)

        if not args.skip_large:
            data = (Path(args.data_dir) if args.data_dir else work) / f"data-{args.size_mib}m.bin"
            log(f"writing {args.size_mib} MiB test file {data}")
            data.parent.mkdir(parents=True, exist_ok=True)
            make_data_file(data, size)
            large_ports = dict(ports)
            if base is not None:
                large_ports["relay-base"] = base_port
            large_rounds(args, results, monitors, large_ports, client, presign, base_presign,
                         data, root, curl, timeout, alive)
            if sealing is not None:
                encryption_rounds(args, results, monitors, presign, sealing, data, root, curl,
                                  timeout, alive)

        use_wrk = tools["wrk"] is not None and not args.no_wrk
        if use_wrk:
            results.small_tool = (f"wrk --latency, 1 thread, {args.connections} connections, "
                                  f"{args.small_rounds} x {args.seconds}s per path")
        else:
            results.small_tool = (f"python http.client, 1 keep-alive connection, "
                                  f"{args.small_rounds} x {args.seconds}s per path (no wrk)")
        log(f"1 KiB GETs: {results.small_tool}")
        small_urls = {path: on_port(small_get, port, schemes[path]) for path, port in ports.items()}
        for name, (_, port) in floors.items():
            small_urls[name] = on_port(small_get, port)
            check_small(small_urls[name], small)
        if relay_n is not None:
            small_urls[relay_n_name] = presigner(relay_n_port, client)("GET", SMALL_KEY)
            check_small(small_urls[relay_n_name], small)
        if base is not None:
            small_urls["relay-base"] = presigner(base_port, client)("GET", SMALL_KEY)
            check_small(small_urls["relay-base"], small)

        def small_gets(url: str, seconds: int) -> SmallRun:
            if use_wrk:
                return wrk_run(tools["wrk"] or "wrk", url, seconds, args.connections)
            return python_run(url, seconds)

        for path, url in small_urls.items():  # warm-up, not counted
            small_gets(url, 1)
        for round_ in range(args.small_rounds):
            for path, url in small_urls.items():
                monitor = monitors[path]

                def measure(url: str = url) -> SmallRun:
                    return small_gets(url, args.seconds)

                result, cpu = monitor.phase(f"1 KiB GET {path}", measure)
                result.cpu_seconds = cpu
                results.small.setdefault(path, []).append(result)
                log(f"1 KiB GET {path:9s} {result.rate:9.0f} req/s  p50 {result.p50_ms:7.3f} ms"
                    f"  p99 {result.p99_ms:7.3f} ms  CPU {cpu:5.2f}s  ({result.summary})")
                alive()
        check_small(small_urls["relay"], small)  # still answering correctly afterwards
        for name, monitor in monitors.items():
            monitor.finish()
            results.peaks[name] = monitor.overall_peak_kib / 1024

        profile: list[tuple[str, str, Path]] = []
        if args.profile:
            profile = run_profile(args, relay.pid, presign, small_urls["relay"], work, curl,
                                  timeout, small_gets, alive)

        report(args, results, monitors, profile)
        warnings = [line for line in tail(relay_log, 100000).splitlines()
                    if "refused" in line or "Traceback" in line or "Unhandled" in line]
        if warnings:
            print(f"\nrelay log has {len(warnings)} refusal/error lines, e.g.:")
            print("\n".join(warnings[:5]))
        if args.json:
            Path(args.json).write_text(json.dumps({
                "size_mib": args.size_mib,
                "repeat": args.repeat,
                "rates_mib_s": results.rates,
                "cpu_s_per_gib": results.cpu_per_gib,
                "small": {k: [vars(r) for r in v] for k, v in results.small.items()},
                "small_tool": results.small_tool,
                "workers": args.workers,
                "tls": args.tls,
                "workers_note": results.workers_note,
                "idle_rss_mib": results.idle,
                "peak_rss_mib": results.peaks,
                "encryption": {
                    "rates_mib_s": results.enc_rates,
                    "cpu_s_per_gib": results.enc_cpu_per_gib,
                    "peak_rss_mib": results.enc_peaks,
                } if results.enc_rates else None,
                "phases": {k: [vars(p) for p in m.phases] for k, m in monitors.items()},
            }, indent=2) + "\n")
        return 0
    except BenchError:
        if relay_log is not None:
            print(f"\n--- relay log (tail) ---\n{tail(relay_log)}", file=sys.stderr)
        raise
    finally:
        for p in reversed(procs):
            stop_process(p)


def large_rounds(
    args: argparse.Namespace,
    results: Results,
    monitors: dict[str, Monitor],
    ports: dict[str, int],
    client: str,
    presign: Callable[[str, str], str],
    base_presign: Callable[[str, str], str],
    data: Path,
    root: Path,
    curl: str,
    timeout: float,
    alive: Callable[[], None],
) -> None:
    """PUT, GET and 8-stream GET of the large object on every path, alternating."""
    size = args.size_mib * MIB
    stored = root / BUCKET / BIG_KEY
    urls = {"PUT": presign("PUT", BIG_KEY), "GET": presign("GET", BIG_KEY)}
    base_urls = {"PUT": base_presign("PUT", BIG_KEY), "GET": base_presign("GET", BIG_KEY)}
    kinds = (("PUT", "PUT", 1), ("GET", "GET", 1), (f"GET x{STREAMS}", "GET", STREAMS))
    for kind, _, _ in kinds:
        results.rates[kind] = {path: [] for path in ports}
        results.cpu_per_gib[kind] = {path: [] for path in ports}
    # Round 0 warms up (first-touch costs land on whichever path runs first);
    # then the paths alternate within each round, so that drift hits all.
    for round_ in range(args.repeat + 1):
        counted = round_ > 0
        for kind, method, streams in kinds:
            for path in ports:
                if method == "PUT":
                    stored.unlink(missing_ok=True)  # each PUT stores the object anew
                url = on_port((base_urls if path == "relay-base" else urls)[method], ports[path],
                              "http" if path == "direct" else client)

                def transfer(url: str = url, method: str = method, streams: int = streams) -> float:
                    return curl_transfer(curl, method, url, data, size, timeout, streams)

                seconds, cpu = monitors[path].phase(f"{args.size_mib} MiB {kind} {path}", transfer)
                rate = args.size_mib / seconds
                per_gib = cpu / (size / GIB)
                if counted:
                    results.rates[kind][path].append(rate)
                    results.cpu_per_gib[kind][path].append(per_gib)
                note = "" if counted else "  (warm-up, not counted)"
                log(f"{kind:7s} {path:7s} {args.size_mib} MiB in {seconds:6.2f}s = "
                    f"{rate:8.1f} MiB/s, CPU {per_gib:5.2f} s/GiB{note}")
                alive()
                if method == "PUT" and stored.stat().st_size != size:
                    raise BenchError(f"{kind} {path}: stored object has "
                                     f"{stored.stat().st_size} bytes")
                if method == "PUT" and path == "relay" and not counted and not args.no_verify:
                    if not filecmp.cmp(data, stored, shallow=False):
                        raise BenchError("PUT relay: stored object differs from the source")
                    log("PUT relay: stored object is byte-identical to the source")


def encryption_rounds(
    args: argparse.Namespace,
    results: Results,
    monitors: dict[str, Monitor],
    presign: Callable[..., str],
    sealing: Sealing,
    data: Path,
    root: Path,
    curl: str,
    timeout: float,
    alive: Callable[[], None],
) -> None:
    """The same relay, plain bucket against encrypted bucket, alternating:
    PUT, GET, 8 parallel PUTs (8 objects of 1/8 of the size) and 8 parallel
    ranged GETs (1/8 of the object each, as in ``large_rounds``)."""
    from s3relay.crypt.layout import NONCE, stored_size

    size = args.size_mib * MIB
    part_size = size // STREAMS  # whole MiB: a multiple of 8
    sealed = root / ENC_BUCKET / SEALED_KEY
    t0 = time.monotonic()
    sealing.seal(data, sealed)
    log(f"sealed {args.size_mib} MiB into {sealed} ({sealed.stat().st_size} bytes, "
        f"{time.monotonic() - t0:.1f}s); key id {sealing.metadata['x-amz-meta-s3relay-key-id']}")
    if sealed.stat().st_size != stored_size(size):
        raise BenchError(f"sealed object has {sealed.stat().st_size} bytes, "
                         f"not stored_size({size}) = {stored_size(size)}")
    part = data.with_name(f"data-{args.size_mib}m-part{STREAMS}.bin")
    if not (part.exists() and part.stat().st_size == part_size):
        with data.open("rb") as source, part.open("wb") as out:
            left = part_size
            while left:
                left -= out.write(source.read(min(MIB, left)))
    check_encrypted_reads(curl, presign, data, size, timeout)
    alive()

    buckets = {"relay-plain": BUCKET, "relay-enc": ENC_BUCKET}
    part_keys = [PART_KEY.format(i) for i in range(STREAMS)]
    put_urls = {path: presign("PUT", BIG_KEY, bucket) for path, bucket in buckets.items()}
    part_urls = {path: [presign("PUT", key, bucket) for key in part_keys]
                 for path, bucket in buckets.items()}
    get_urls = {"relay-plain": presign("GET", BIG_KEY, BUCKET),
                "relay-enc": presign("GET", SEALED_KEY, ENC_BUCKET)}
    kinds = (("PUT", "PUT", 1), ("GET", "GET", 1),
             (f"PUT x{STREAMS}", "PUT", STREAMS), (f"GET x{STREAMS}", "GET", STREAMS))
    for kind, _, _ in kinds:
        results.enc_rates[kind] = {path: [] for path in buckets}
        results.enc_cpu_per_gib[kind] = {path: [] for path in buckets}
    for round_ in range(args.repeat + 1):
        counted = round_ > 0
        for kind, method, streams in kinds:
            for path, bucket in buckets.items():
                encrypted = path == "relay-enc"
                stored: list[tuple[Path, int]] = []  # what the PUT must leave upstream
                transfer: Callable[[], float]
                if method == "PUT" and streams == 1:
                    stored = [(root / bucket / BIG_KEY, size)]
                    transfer = partial(curl_transfer, curl, "PUT", put_urls[path], data, size,
                                       timeout)
                elif method == "PUT":
                    stored = [(root / bucket / key, part_size) for key in part_keys]
                    transfer = partial(curl_put_streams, curl, part_urls[path], part, timeout)
                else:
                    transfer = partial(curl_transfer, curl, "GET", get_urls[path], data, size,
                                       timeout, streams)
                for object_path, _ in stored:
                    object_path.unlink(missing_ok=True)  # each PUT stores anew
                seconds, cpu = monitors[path].phase(f"{args.size_mib} MiB {kind}", transfer)
                rate = args.size_mib / seconds
                per_gib = cpu / (size / GIB)
                if counted:
                    results.enc_rates[kind][path].append(rate)
                    results.enc_cpu_per_gib[kind][path].append(per_gib)
                note = "" if counted else "  (warm-up, not counted)"
                log(f"{kind:7s} {path:11s} {args.size_mib} MiB in {seconds:6.2f}s = "
                    f"{rate:8.1f} MiB/s, CPU {per_gib:5.2f} s/GiB{note}")
                alive()
                for object_path, plain_size in stored:
                    want = stored_size(plain_size) if encrypted else plain_size
                    have = object_path.stat().st_size if object_path.exists() else -1
                    if have != want:
                        raise BenchError(f"{kind} {path}: {object_path.name} stored with {have} "
                                         f"bytes, expected {want}")
                if encrypted and stored and not counted:
                    # Not the plaintext: nginx dropped the metadata, so this is all we can check.
                    with stored[0][0].open("rb") as handle, data.open("rb") as source:
                        handle.seek(NONCE)
                        if handle.read(4096) == source.read(4096):
                            raise BenchError(f"{kind} {path}: the stored object holds plaintext")
                    log(f"{kind} {path}: stored sizes are stored_size(plaintext), "
                        "and the bytes are not the plaintext")
                if encrypted or streams > 1:  # the plain big.bin stays for the GETs
                    for object_path, _ in stored:
                        object_path.unlink(missing_ok=True)
    for path in buckets:
        results.enc_peaks[path] = max(p.peak_rss_kib for p in monitors[path].phases) / 1024


def run_profile(
    args: argparse.Namespace,
    pid: int,
    presign: Callable[[str, str], str],
    small_url: str,
    work: Path,
    curl: str,
    timeout: float,
    small_gets: Callable[[str, int], SmallRun],
    alive: Callable[[], None],
) -> list[tuple[str, str, Path]]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.access(py_spy, os.X_OK):
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    out_dir = Path(args.profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    profile: list[tuple[str, str, Path]] = []
    if not args.skip_large:
        size = args.size_mib * MIB
        data = (Path(args.data_dir) if args.data_dir else work) / f"data-{args.size_mib}m.bin"
        for method in ("PUT", "GET"):
            url = presign(method, BIG_KEY)
            out = out_dir / f"relay-{method.lower()}-{args.size_mib}m.txt"
            log(f"profiling a relay {method} of {args.size_mib} MiB with py-spy -> {out}")

            def one(method: str = method, url: str = url) -> float:
                return curl_transfer(curl, method, url, data, size, timeout)

            seconds, raw = profile_transfer(py_spy, pid, out, one)
            profile.append((f"{args.size_mib} MiB {method}",
                            f"{args.size_mib / seconds:.0f} MiB/s", raw))
            alive()
    out = out_dir / "relay-get-1k.txt"
    small_seconds = min(args.seconds, 5)
    log(f"profiling {small_seconds}s of relay 1 KiB GETs with py-spy -> {out}")
    rate, raw = profile_transfer(py_spy, pid, out,
                                 lambda: small_gets(small_url, small_seconds).rate)
    profile.append(("1 KiB GET", f"{rate:.0f} req/s", raw))
    alive()
    return profile


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def fmt(value: float, width: int = 11, places: int = 1) -> str:
    return f"{value:>{width}.{places}f}" if value == value else f"{'-':>{width}}"


def report(
    args: argparse.Namespace,
    results: Results,
    monitors: dict[str, Monitor],
    profile: list[tuple[str, str, Path]],
) -> None:
    size = f"{args.size_mib} MiB" if args.size_mib % 1024 else f"{args.size_mib // 1024} GiB"
    header = (f"{'metric':<22} {'unit':<9} {'direct':>11} {'nginx':>11} {'relay':>11} "
              f"{'relay/nginx':>11}  {'target':<18} met?")
    rows: list[str] = []

    def row(metric: str, unit: str, values: dict[str, float], target: str = "",
            met: bool | None = None, ratio: float | None = None, places: int = 1) -> None:
        if ratio is None:
            ratio = values["relay"] / values["nginx"] if values.get("nginx") else float("nan")
        mark = "-" if met is None else ("yes" if met else "NO")
        rows.append(f"{metric:<22} {unit:<9} "
                    + "".join(fmt(values.get(p, float("nan")), 11, places) + " " for p in PATHS)
                    + f"{fmt(ratio, 11, 3)}  {target:<18} {mark}")

    for kind in results.rates:
        rates = {p: median(v) for p, v in results.rates[kind].items()}
        ratio = rates["relay"] / rates["nginx"]
        row(f"{size} {kind}", "MiB/s", rates, f"ratio >= {THROUGHPUT_TARGET}",
            ratio >= THROUGHPUT_TARGET)
    small = {p: median([r.rate for r in v]) for p, v in results.small.items()}
    if small:
        ratio = small["relay"] / small["nginx"]
        row("1 KiB GET", "req/s", small, f"ratio >= {SMALL_TARGET}", ratio >= SMALL_TARGET)
        row("1 KiB GET p50", "ms", {p: median([r.p50_ms for r in v])
                                   for p, v in results.small.items()}, places=3)
        row("1 KiB GET p99", "ms", {p: median([r.p99_ms for r in v])
                                   for p, v in results.small.items()}, places=3)
    for kind in results.cpu_per_gib:
        cpu = {p: median(v) for p, v in results.cpu_per_gib[kind].items()}
        ratio = cpu["relay"] / cpu["nginx"] if cpu["nginx"] else float("nan")
        row(f"CPU/GiB {kind}", "s", cpu, f"ratio <= {CPU_PER_GIB_TARGET}",
            ratio <= CPU_PER_GIB_TARGET, places=2)
    if small:
        per_k = {p: 1000 * sum(r.cpu_seconds for r in v) / max(1, sum(r.requests for r in v))
                 for p, v in results.small.items()}
        row("CPU/1000 1 KiB GETs", "s", per_k, places=3)
    peaks = {p: results.peaks.get(p, float("nan")) for p in PATHS}
    peak_met = max(v for k, v in results.peaks.items() if k.startswith("relay")) < RSS_TARGET_MIB
    row("peak RSS (largest)", "MiB", peaks, f"relay < {RSS_TARGET_MIB} MiB", peak_met)

    print()
    print(f"s3relay benchmark: {os.cpu_count()} cores, {size} objects, median of {args.repeat} "
          f"rounds (after a warm-up round); 1 KiB GETs: {results.small_tool}")
    print("direct = the upstream nginx itself (its CPU in the CPU rows); nginx = nginx "
          "proxy_pass in front of it; relay = s3relay, one worker"
          + ("; clients talk TLS to nginx and the relay (ECDSA P-256), plain HTTP to direct"
             if args.tls else ""))
    print(header)
    print("-" * len(header))
    print("\n".join(rows))

    if results.enc_rates:
        report_encryption(args, results, size)

    relay_n_name = f"relay-{args.workers}w"
    if args.workers > 1:
        print()
        if relay_n_name in results.small:
            one, n = small["relay"], small[relay_n_name]
            p50 = median([r.p50_ms for r in results.small[relay_n_name]])
            p99 = median([r.p99_ms for r in results.small[relay_n_name]])
            processes = len(monitors[relay_n_name].pids()) if relay_n_name in monitors else 0
            print(f"worker scaling ({processes} relay processes at the end), 1 KiB GETs: "
                  f"1 worker {one:.0f} req/s -> {args.workers} "
                  f"workers {n:.0f} req/s = {n / one:.2f}x (p50 {p50:.3f} ms, p99 {p99:.3f} ms; "
                  f"peak RSS {results.peaks.get(relay_n_name, 0):.1f} MiB per process)")
            print("  (on a 2-core machine wrk and the upstream nginx share the cores with the "
                  "workers: this is a floor, not the scaling a larger host would show)")
        else:
            print(f"worker scaling: {results.workers_note}")
    if "agent" in results.small:
        twisted, agent = small["twisted"], small["agent"]
        print()
        print(f"framework floor, 1 KiB GETs (bench/floor.py): twisted.web answering from the "
              f"files {twisted:.0f} req/s = {twisted / small['nginx']:.3f}x nginx; twisted.web + "
              f"a pooled Agent proxy, no auth, no log {agent:.0f} req/s = "
              f"{agent / small['nginx']:.3f}x nginx; the relay does {small['relay'] / agent:.2f}x "
              f"the floor proxy's req/s")
    if "relay-base" in results.small:
        print()
        for kind in results.rates:
            then_rate = median(results.rates[kind].get("relay-base", []))
            if then_rate == then_rate:
                now_rate = median(results.rates[kind]["relay"])
                then_cpu = median(results.cpu_per_gib[kind]["relay-base"])
                now_cpu = median(results.cpu_per_gib[kind]["relay"])
                print(f"before/after, {size} {kind}: baseline relay {then_rate:.0f} MiB/s, "
                      f"{then_cpu:.2f} s CPU/GiB -> this tree {now_rate:.0f} MiB/s, "
                      f"{now_cpu:.2f} s CPU/GiB: {now_rate / then_rate:.2f}x MiB/s, "
                      f"{now_cpu / then_cpu:.2f}x CPU per GiB")
        now, then = small["relay"], small["relay-base"]
        cpu = {k: 1000 * sum(r.cpu_seconds for r in results.small[k])
               / max(1, sum(r.requests for r in results.small[k])) for k in ("relay", "relay-base")}
        print(f"before/after, 1 KiB GETs in this run: baseline relay ({args.baseline}) {then:.0f} "
              f"req/s, {cpu['relay-base'] * 1000:.0f} us CPU/request -> this tree {now:.0f} req/s, "
              f"{cpu['relay'] * 1000:.0f} us CPU/request: {now / then:.2f}x req/s, "
              f"{cpu['relay'] / cpu['relay-base']:.2f}x CPU per request")

    print()
    print(f"{'server / phase':<36} {'peak RSS':>10} {'CPU s':>7} {'wall s':>7} {'CPU %':>6}")
    for name, monitor in monitors.items():
        if name == "direct":
            continue
        for p in monitor.phases:
            pct = 100 * p.cpu_seconds / p.wall_seconds if p.wall_seconds else 0.0
            print(f"{monitor.name + ': ' + p.name:<36} {p.peak_rss_kib / 1024:>6.1f} MiB "
                  f"{p.cpu_seconds:>7.2f} {p.wall_seconds:>7.2f} {pct:>5.0f}%")
    if args.repeat > 1 and results.rates:
        print("\nall large-transfer samples (MiB/s):")
        for kind, by_path in results.rates.items():
            print(f"  {kind:7s} " + "; ".join(
                f"{p} " + ", ".join(f"{r:.0f}" for r in v) for p, v in by_path.items()))
    if args.small_rounds > 1 and results.small:
        print("all 1 KiB GET samples (req/s): " + "; ".join(
            f"{p} " + ", ".join(f"{r.rate:.0f}" for r in v) for p, v in results.small.items()))

    for what, rate, raw in profile:
        samples, counts = hot_functions(raw)
        print(f"\npy-spy, relay {what} ({rate} while profiled): {samples} non-idle samples "
              f"at {PROFILE_RATE} Hz; stacks in {raw}")
        if not samples:
            continue
        top = args.profile_top
        inclusive = counts["work"].most_common(top)
        relay_code = [(n, c) for n, c in counts["total"].most_common()
                      if "(s3relay/" in n][:top]
        for title, ranked in (("self time by function (C calls count to their caller)",
                             counts["self"].most_common(top)),
                            ("self time by line", counts["line"].most_common(top)),
                            ("total time by function below the reactor's dispatch", inclusive),
                            ("total time in s3relay's own functions", relay_code)):
            print(f"  {title}:")
            for name, count in ranked:
                print(f"    {100 * count / samples:5.1f}%  {name}")


def report_encryption(args: argparse.Namespace, results: Results, size: str) -> None:
    """Encrypted against plain, the same relay process, against the encryption issue's targets."""
    header = (f"{'metric':<22} {'unit':<9} {'plain':>11} {'encrypted':>11} {'enc/plain':>11}  "
              f"{'target':<18} met?")
    rows: list[str] = []

    def row(metric: str, unit: str, plain: float, enc: float, target: str = "",
            met: bool | None = None, places: int = 1) -> None:
        ratio = enc / plain if plain else float("nan")
        mark = "-" if met is None else ("yes" if met else "NO")
        rows.append(f"{metric:<22} {unit:<9} {fmt(plain, 11, places)} {fmt(enc, 11, places)} "
                    f"{fmt(ratio, 11, 3)}  {target:<18} {mark}")

    for kind, by_path in results.enc_rates.items():
        plain, enc = median(by_path["relay-plain"]), median(by_path["relay-enc"])
        row(f"{size} {kind}", "MiB/s", plain, enc, f"ratio >= {ENC_TARGET}",
            enc / plain >= ENC_TARGET)
    for kind, by_path in results.enc_cpu_per_gib.items():
        row(f"CPU/GiB {kind}", "s", median(by_path["relay-plain"]),
            median(by_path["relay-enc"]), places=2)
    plain_peak, enc_peak = results.enc_peaks["relay-plain"], results.enc_peaks["relay-enc"]
    row("peak RSS (relay)", "MiB", plain_peak, enc_peak, f"relay < {RSS_TARGET_MIB} MiB",
        max(plain_peak, enc_peak) < RSS_TARGET_MIB)
    print()
    print(f"encryption at rest, the same relay process: bucket {BUCKET} (plain) against "
          f"{ENC_BUCKET} ([encryption]: AES-256-GCM, 64 KiB segments); median of {args.repeat} "
          f"rounds (after a warm-up round); x{STREAMS}: {STREAMS} transfers of 1/{STREAMS} "
          f"at once (PUTs: {STREAMS} objects; GETs: ranges of one object)")
    print(header)
    print("-" * len(header))
    print("\n".join(rows))
    if args.repeat > 1:
        print("all samples (MiB/s, plain; encrypted):")
        for kind, by_path in results.enc_rates.items():
            print(f"  {kind:7s} " + "; ".join(", ".join(f"{r:.0f}" for r in by_path[p])
                                              for p in ("relay-plain", "relay-enc")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure s3relay and nginx proxy_pass against the same nginx upstream.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="large object size")
    parser.add_argument("--repeat", type=int, default=3,
                        help="counted rounds of large transfers (the median counts)")
    parser.add_argument("--skip-large", action="store_true", help="only the 1 KiB GETs")
    parser.add_argument("--seconds", type=int, default=10,
                        help="duration of each 1 KiB GET run")
    parser.add_argument("--small-rounds", type=int, default=3,
                        help="rounds of 1 KiB GETs (each path once per round; the median counts)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2,
                        help="also run a relay with workers = N for the 1 KiB GETs (1: none)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also measure 1 KiB GETs through a relay run from the s3relay "
                             "source in DIR (before/after in one run)")
    parser.add_argument("--tls", action="store_true",
                        help="clients talk TLS to the nginx proxy and the relay (self-signed "
                             "P-256 certificate; the upstream stays plain HTTP)")
    parser.add_argument("--no-floor", action="store_true",
                        help="skip the twisted.web floor servers (bench/floor.py)")
    parser.add_argument("--no-encryption", action="store_true",
                        help="skip encryption at rest (no [encryption] section in the relay)")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python loop, not wrk")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the byte comparison of the object PUT through the relay")
    parser.add_argument("--profile", metavar="DIR",
                        help="then profile a relay PUT and GET and 1 KiB GETs with py-spy, stacks in DIR")
    parser.add_argument("--profile-top", type=int, default=12, help="functions listed")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="keep (and reuse) the large test file here")
    parser.add_argument("--workdir", metavar="DIR",
                        help="use and keep this dir (logs, configs, objects) instead of a temp dir")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if (args.size_mib < 1 or args.seconds < 1 or args.repeat < 1 or args.connections < 1
            or args.small_rounds < 1 or args.workers < 1):
        parser.error("sizes, counts and durations must be positive")

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    if args.workdir:
        work = Path(args.workdir)
    else:
        work = Path(tempfile.mkdtemp(prefix="s3relay-bench-", dir=scratch_base(args.size_mib)))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, work)
    except BenchError as e:
        print(f"\nbench FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
