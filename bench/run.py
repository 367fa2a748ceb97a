#!/usr/bin/env python3
"""Throughput and memory benchmark: s3relay against the same upstream, direct.

    .venv/bin/python bench/run.py                          # 1 GiB objects, 10 s of small GETs
    .venv/bin/python bench/run.py --size-mib 64 --seconds 3   # a quick run

One run starts a fast upstream (Debian's nginx on 127.0.0.1, serving and
accepting PUTs from a temp dir) and the relay in front of it as a real
``twistd -n s3relay`` process, then measures, each directly against nginx and
through the relay:

* a large PUT and a large GET (``--size-mib``, default 1 GiB) with ``curl``,
  MiB/s from the wall time around the curl process: one warm-up round, then
  ``--repeat`` rounds of direct PUT, relay PUT, direct GET, relay GET; the
  median counts;
* 1 KiB GETs per second with ``wrk`` (``--connections`` keep-alive
  connections, one thread, ``--seconds``), or a Python keep-alive loop when
  wrk is missing.

Requests through the relay carry presigned SigV4 URLs made by botocore, so the
relay does all its work: verify, plan the body, re-sign, stream.  nginx checks
no signature.  The output is a table of direct vs relay with ratios and
whether each target of the issue is met (large-object throughput at least half
of direct; relay peak RSS under 64 MiB), plus the relay's RSS and CPU per
phase.  Timings are reported, never asserted: the exit status is non-zero
only when something failed (a bad status, a short body, a process that died).

``--profile DIR`` then runs one more relay PUT and GET of the large object and
a few seconds of 1 KiB GETs under ``py-spy record`` (not counted in the table)
and prints the hottest functions and lines by self time; the raw collapsed
stacks stay in DIR.

The scratch dir (test file, nginx's root and body temp files) is on /dev/shm
when it has room, so that the upstream is fast and steady rather than swinging
with disk writeback.  Loopback only; every process started here is stopped on
exit and the scratch dir removed (unless ``--workdir`` names one to keep).
"""

from __future__ import annotations

import argparse
import collections
import filecmp
import functools
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
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
BUCKET = "bench"
BIG_KEY = "big.bin"
SMALL_KEY = "small-1k.bin"
SMALL_SIZE = 1024
MIB = 1024 * 1024

CLIENT_KEY = ("AKIABENCHCLIENT00001", "benchclientsecret/" + "c" * 22)
UPSTREAM_KEY = ("AKIABENCHUPSTREAM001", "benchupstreamsecret/" + "u" * 20)

#: Targets from the issue.
RSS_TARGET_MIB = 64
THROUGHPUT_TARGET = 0.5

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
    """/dev/shm when it can hold the test file and two copies of the object.

    The upstream should be fast and steady: on a disk, nginx's PUTs of 1 GiB
    swing with dirty-page writeback and hide the relay's own cost.
    """
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    return "/dev/shm" if free > (3 * size_mib + 256) * MIB else None


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
# /proc readings of the relay


def proc_status_kib(pid: int, field_name: str) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise BenchError(f"no {field_name} in /proc/{pid}/status")


def proc_cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


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
    user_seconds: float
    system_seconds: float
    wall_seconds: float

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.system_seconds


@dataclass
class RelayMonitor:
    """Peak RSS and CPU of the relay, per phase and overall."""

    pid: int
    baseline_rss_kib: int = 0
    phases: list[PhaseStats] = field(default_factory=list)
    per_phase: bool = True
    overall_peak_kib: int = 0

    def start(self) -> None:
        self.baseline_rss_kib = proc_status_kib(self.pid, "VmRSS")
        self.overall_peak_kib = proc_status_kib(self.pid, "VmHWM")
        self.per_phase = reset_peak_rss(self.pid)

    def phase(self, name: str, run: Callable[[], Any]) -> Any:
        (user0, sys0), t0 = proc_cpu_seconds(self.pid), time.monotonic()
        result = run()
        peak = proc_status_kib(self.pid, "VmHWM")
        self.overall_peak_kib = max(self.overall_peak_kib, peak)
        user1, sys1 = proc_cpu_seconds(self.pid)
        wall = time.monotonic() - t0
        same = [p for p in self.phases if p.name == name]
        if same:  # a phase run in several parts: add them up
            phase = same[0]
            phase.peak_rss_kib = max(phase.peak_rss_kib, peak)
            phase.user_seconds += user1 - user0
            phase.system_seconds += sys1 - sys0
            phase.wall_seconds += wall
        else:
            self.phases.append(PhaseStats(name, peak, user1 - user0, sys1 - sys0, wall))
        if self.per_phase:
            reset_peak_rss(self.pid)
        return result

    def finish(self) -> None:
        self.overall_peak_kib = max(self.overall_peak_kib, proc_status_kib(self.pid, "VmHWM"))


# --------------------------------------------------------------------------
# the processes


def start_nginx(nginx: str, work: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    root = work / "root"
    (root / BUCKET).mkdir(parents=True, exist_ok=True)
    tmp = work / "nginx"
    tmp.mkdir(exist_ok=True)
    port = free_port()
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=30).stderr
    temp_paths = "".join(
        f"    {module}_temp_path {tmp}/{module};\n"
        for module in ("proxy", "fastcgi", "uwsgi", "scgi")
        if f"--without-http_{module}_module" not in built
    )
    user = "user root root;" if os.geteuid() == 0 else ""
    config = (BENCH / "nginx.conf.template").read_text()
    for name, value in {
        "USER": user,
        "TMP": str(tmp),
        "ROOT": str(root),
        "PORT": str(port),
        "TEMP_PATHS": temp_paths,
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
    wait_for_port(port, process, tmp / "nginx-error.log", "nginx")
    return process, port, root


def start_relay(work: Path, upstream_port: int) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    config = work / "relay.ini"
    config.write_text(
        f"""\
[server]
listen = tcp:{port}:interface=127.0.0.1
region = us-east-1
idle_timeout = 300

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
"""
    )
    twistd = Path(sys.executable).parent / "twistd"
    path = os.environ.get("PYTHONPATH", "")
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{path}" if path else str(REPO))
    logfile = work / "relay.log"
    process = subprocess.Popen(
        [str(twistd), "-n", "--pidfile=", "s3relay", "--config", str(config)],
        stdout=logfile.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=work,
        start_new_session=True,
    )
    wait_for_port(port, process, logfile, "relay")
    return process, port, logfile


def presigner(relay_port: int) -> Callable[[str, str], str]:
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{relay_port}",
        region_name="us-east-1",
        aws_access_key_id=CLIENT_KEY[0],
        aws_secret_access_key=CLIENT_KEY[1],
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

    def presign(method: str, key: str) -> str:
        operation = {"GET": "get_object", "PUT": "put_object"}[method]
        return str(
            client.generate_presigned_url(
                operation, Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=6 * 3600
            )
        )

    return presign


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


def curl_transfer(
    curl: str, method: str, url: str, data: Path, size: int, timeout: float
) -> float:
    """One curl PUT or GET of ``size`` bytes; returns wall seconds."""
    fmt = "%{http_code} %{size_upload} %{size_download}"
    if method == "PUT":
        cmd = [curl, "-sS", "-T", str(data), "-o", "/dev/null", "-w", fmt, url]
    else:
        cmd = [curl, "-sS", "-o", "/dev/null", "-w", fmt, url]
    cmd[1:1] = ["--max-time", str(int(timeout)), "--noproxy", "*"]
    t0 = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
    seconds = time.monotonic() - t0
    parts = result.stdout.split()
    if result.returncode != 0 or len(parts) != 3:
        raise BenchError(f"curl {method} failed ({result.returncode}): {result.stderr.strip()}")
    code, uploaded, downloaded = int(parts[0]), int(parts[1]), int(parts[2])
    if code not in (200, 201, 204):
        raise BenchError(f"curl {method}: HTTP {code}")
    moved = uploaded if method == "PUT" else downloaded
    if moved != size:
        raise BenchError(f"curl {method}: moved {moved} bytes, expected {size}")
    return seconds


def wrk_rate(wrk: str, url: str, seconds: int, connections: int) -> tuple[float, str]:
    cmd = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    out = result.stdout
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip()}\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise BenchError(f"wrk printed no Requests/sec:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad and int(bad.group(1)):
        raise BenchError(f"wrk saw {bad.group(1)} non-2xx responses:\n{out}")
    errors = re.search(r"Socket errors:.*", out)
    summary = " ".join(
        line.strip() for line in out.splitlines() if "requests in" in line or "Latency" in line
    )
    if errors:
        summary += f"; {errors.group(0)}"
    return float(match.group(1)), re.sub(r"\s+", " ", summary)


def python_rate(url: str, seconds: int) -> tuple[float, str]:
    """Fallback without wrk: one keep-alive connection, sequential GETs."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    count, deadline = 0, time.monotonic() + seconds
    t0 = time.monotonic()
    try:
        while time.monotonic() < deadline and count < 10_000_000:
            conn.request("GET", target)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or len(body) != SMALL_SIZE:
                raise BenchError(f"GET {parts.path}: HTTP {response.status}, {len(body)} bytes")
            count += 1
    finally:
        conn.close()
    elapsed = time.monotonic() - t0
    return count / elapsed, f"{count} requests in {elapsed:.1f}s on 1 connection (python)"


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
class Row:
    metric: str
    unit: str
    direct: float
    relay: float
    target: str
    met: bool | None

    @property
    def ratio(self) -> float:
        return self.relay / self.direct if self.direct else float("nan")


def median_rate(samples: list[float]) -> float:
    return statistics.median(samples)


def run(args: argparse.Namespace, work: Path) -> int:
    tools = ensure_tools(need_wrk=not args.no_wrk)
    size = args.size_mib * MIB
    timeout = max(120.0, size / (2 * MIB))  # even 2 MiB/s finishes
    procs: list[subprocess.Popen[bytes]] = []
    relay_log: Path | None = None
    try:
        data = (Path(args.data_dir) if args.data_dir else work) / f"data-{args.size_mib}m.bin"
        log(f"work dir {work}; writing {args.size_mib} MiB test file {data}")
        data.parent.mkdir(parents=True, exist_ok=True)
        make_data_file(data, size)

        nginx, nginx_port, root = start_nginx(tools["nginx"] or "nginx", work)
        procs.append(nginx)
        log(f"nginx on 127.0.0.1:{nginx_port} (pid {nginx.pid}), root {root}")
        relay, relay_port, relay_log = start_relay(work, nginx_port)
        procs.append(relay)
        log(f"relay on 127.0.0.1:{relay_port} (pid {relay.pid}), log {relay_log}")
        presign = presigner(relay_port)
        direct_url = f"http://127.0.0.1:{nginx_port}/{BUCKET}/"

        time.sleep(1.0)  # idle start
        monitor = RelayMonitor(relay.pid)
        monitor.start()
        log(f"relay idle RSS {monitor.baseline_rss_kib / 1024:.1f} MiB")

        def alive() -> None:
            for p, name in ((nginx, "nginx"), (relay, "relay")):
                if p.poll() is not None:
                    raise BenchError(f"{name} died with {p.returncode}")

        # Warm-up and correctness: a small PUT and GET through the relay.
        small = secrets.token_bytes(SMALL_SIZE)
        small_get = presign("GET", SMALL_KEY)

        def warm_up() -> None:
            put_small(presign("PUT", SMALL_KEY), small)
            check_small(small_get, small)
            check_small(direct_url + SMALL_KEY, small)

        monitor.phase("warm-up (1 KiB PUT+GET)", warm_up)

        big_put, big_get = presign("PUT", BIG_KEY), presign("GET", BIG_KEY)
        stored = root / BUCKET / BIG_KEY
        rates: dict[str, list[float]] = {k: [] for k in ("put-direct", "put-relay",
                                                         "get-direct", "get-relay")}

        def transfer(kind: str, method: str, url: str, counted: bool) -> None:
            if method == "PUT":
                # Each PUT creates the object anew, so that the checks below
                # see what this PUT stored.
                stored.unlink(missing_ok=True)
            seconds = curl_transfer(tools["curl"] or "curl", method, url, data, size, timeout)
            rate = args.size_mib / seconds
            if counted:
                rates[kind].append(rate)
            note = "" if counted else "  (warm-up, not counted)"
            log(f"{kind:10s} {args.size_mib} MiB in {seconds:6.2f}s = {rate:8.1f} MiB/s{note}")
            alive()
            if method == "PUT" and stored.stat().st_size != size:
                raise BenchError(f"{kind}: stored object has {stored.stat().st_size} bytes")
            if kind == "put-relay" and not counted and not args.no_verify:
                if not filecmp.cmp(data, stored, shallow=False):
                    raise BenchError("put-relay: stored object differs from the source")
                log("put-relay: stored object is byte-identical to the source")

        # Round 0 warms up (first-touch costs land on whichever path runs
        # first); then direct and relay alternate, so that drift hits both.
        plan = (
            ("put-direct", "PUT", direct_url + BIG_KEY),
            ("put-relay", "PUT", big_put),
            ("get-direct", "GET", direct_url + BIG_KEY),
            ("get-relay", "GET", big_get),
        )
        for round_ in range(args.repeat + 1):
            for kind, method, url in plan:
                path = kind.split("-")[1]
                monitor.phase(
                    f"{args.size_mib} MiB {method} {path}",
                    functools.partial(transfer, kind, method, url, round_ > 0),
                )

        use_wrk = tools["wrk"] is not None and not args.no_wrk
        if use_wrk:
            small_tool = f"wrk, {args.connections} connections, 1 thread, {args.seconds}s"
        else:
            small_tool = f"python http.client, 1 keep-alive connection, {args.seconds}s (no wrk)"
        log(f"1 KiB GETs: {small_tool}")
        small_rates: dict[str, float] = {}

        def small_gets(kind: str, url: str) -> Callable[[], None]:
            def go() -> None:
                if use_wrk:
                    rate, summary = wrk_rate(tools["wrk"] or "wrk", url, args.seconds,
                                             args.connections)
                else:
                    rate, summary = python_rate(url, args.seconds)
                small_rates[kind] = rate
                log(f"{kind:10s} {rate:10.0f} req/s  ({summary})")
                alive()
            return go

        monitor.phase("1 KiB GET direct", small_gets("small-direct", direct_url + SMALL_KEY))
        monitor.phase("1 KiB GET relay", small_gets("small-relay", small_get))
        check_small(small_get, small)  # still answering correctly afterwards
        monitor.finish()

        profile: list[tuple[str, str, Path]] = []
        if args.profile:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            if not os.access(py_spy, os.X_OK):
                raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
            out_dir = Path(args.profile)
            out_dir.mkdir(parents=True, exist_ok=True)
            curl = tools["curl"] or "curl"
            for method, url in (("PUT", big_put), ("GET", big_get)):
                out = out_dir / f"relay-{method.lower()}-{args.size_mib}m.txt"
                log(f"profiling a relay {method} of {args.size_mib} MiB with py-spy -> {out}")

                def one(method: str = method, url: str = url) -> float:
                    return curl_transfer(curl, method, url, data, size, timeout)

                seconds, raw = profile_transfer(py_spy, relay.pid, out, one)
                profile.append((f"{args.size_mib} MiB {method}",
                                f"{args.size_mib / seconds:.0f} MiB/s", raw))
                alive()
            out = out_dir / "relay-get-1k.txt"
            small_seconds = min(args.seconds, 5)
            log(f"profiling {small_seconds}s of relay 1 KiB GETs with py-spy -> {out}")

            def small_run() -> float:
                if use_wrk:
                    return wrk_rate(tools["wrk"] or "wrk", small_get, small_seconds,
                                    args.connections)[0]
                return python_rate(small_get, small_seconds)[0]

            rate, raw = profile_transfer(py_spy, relay.pid, out, small_run)
            profile.append(("1 KiB GET", f"{rate:.0f} req/s", raw))
            alive()

        report(args, rates, small_rates, small_tool, monitor, profile)
        warnings = [line for line in tail(relay_log, 100000).splitlines()
                    if "refused" in line or "Traceback" in line or "Unhandled" in line]
        if warnings:
            print(f"\nrelay log has {len(warnings)} refusal/error lines, e.g.:")
            print("\n".join(warnings[:5]))
        if args.json:
            Path(args.json).write_text(json.dumps({
                "size_mib": args.size_mib,
                "repeat": args.repeat,
                "rates_mib_s": rates,
                "small_req_s": small_rates,
                "small_tool": small_tool,
                "relay_idle_rss_kib": monitor.baseline_rss_kib,
                "relay_peak_rss_kib": monitor.overall_peak_kib,
                "phases": [vars(p) for p in monitor.phases],
            }, indent=2) + "\n")
        return 0
    except BenchError:
        if relay_log is not None:
            print(f"\n--- relay log (tail) ---\n{tail(relay_log)}", file=sys.stderr)
        raise
    finally:
        for p in reversed(procs):
            stop_process(p)


def report(
    args: argparse.Namespace,
    rates: dict[str, list[float]],
    small_rates: dict[str, float],
    small_tool: str,
    monitor: RelayMonitor,
    profile: list[tuple[str, str, Path]],
) -> None:
    size = f"{args.size_mib} MiB" if args.size_mib % 1024 else f"{args.size_mib // 1024} GiB"
    rows = []
    for method in ("PUT", "GET"):
        direct = median_rate(rates[f"{method.lower()}-direct"])
        relay = median_rate(rates[f"{method.lower()}-relay"])
        rows.append(Row(f"{size} {method}", "MiB/s", direct, relay,
                        f"ratio >= {THROUGHPUT_TARGET}", relay / direct >= THROUGHPUT_TARGET))
    rows.append(Row("1 KiB GET", "req/s", small_rates["small-direct"],
                    small_rates["small-relay"], "(none)", None))

    print()
    print(f"s3relay benchmark: {os.cpu_count()} cores, {size} objects, "
          f"median of {args.repeat} (after a warm-up round); 1 KiB GETs with {small_tool}")
    header = f"{'metric':<16} {'unit':<6} {'direct':>10} {'relay':>10} {'ratio':>7}  {'target':<16} met?"
    print(header)
    print("-" * len(header))
    for row in rows:
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        print(f"{row.metric:<16} {row.unit:<6} {row.direct:>10.1f} {row.relay:>10.1f} "
              f"{row.ratio:>7.3f}  {row.target:<16} {met}")
    peak = monitor.overall_peak_kib / 1024
    rss_met = "yes" if peak < RSS_TARGET_MIB else "NO"
    print(f"{'relay peak RSS':<16} {'MiB':<6} {'':>10} {peak:>10.1f} {'':>7}  "
          f"{'< ' + str(RSS_TARGET_MIB) + ' MiB':<16} {rss_met}")
    print(f"relay idle RSS after start: {monitor.baseline_rss_kib / 1024:.1f} MiB; "
          f"peak (VmHWM) over the run: {peak:.1f} MiB")

    print()
    what = "peak RSS" if monitor.per_phase else "VmHWM so far"
    print(f"{'relay per phase':<28} {what:>12} {'user s':>7} {'sys s':>7} {'wall s':>7} "
          f"{'CPU %':>6}")
    for p in monitor.phases:
        pct = 100 * p.cpu_seconds / p.wall_seconds if p.wall_seconds else 0.0
        print(f"{p.name:<28} {p.peak_rss_kib / 1024:>8.1f} MiB {p.user_seconds:>7.2f} "
              f"{p.system_seconds:>7.2f} {p.wall_seconds:>7.2f} {pct:>5.0f}%")
    if args.repeat > 1:
        print("\nall large-transfer samples (MiB/s): " + "; ".join(
            f"{k} " + ", ".join(f"{r:.0f}" for r in v) for k, v in rates.items()))

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure s3relay against the same nginx upstream, direct.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="large object size")
    parser.add_argument("--seconds", type=int, default=10, help="duration of each 1 KiB GET run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--repeat", type=int, default=5,
                        help="counted rounds of large transfers (the median counts)")
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
    if args.size_mib < 1 or args.seconds < 1 or args.repeat < 1 or args.connections < 1:
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
