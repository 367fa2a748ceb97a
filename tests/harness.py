"""Real processes for end-to-end tests: a signature-checking S3 server and the relay.

The S3 server is moto in server mode with IAM enforcement on
(``INITIAL_NO_AUTH_ACTION_COUNT``): after the few free calls that create an
IAM user and its key, every request must carry a valid SigV4 signature for
that key (DESIGN.md §5).  The relay is started the way an operator starts it,
``twistd -n s3relay --config FILE``, as a child process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config as BotoConfig

REPO = Path(__file__).resolve().parent.parent
FREE_CALLS = 3  # iam CreateUser, PutUserPolicy, CreateAccessKey
STARTUP_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], bool], seconds: float = 30) -> bool:
    """Poll ``check`` every 0.1 s until it is true (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {STARTUP_SECONDS}s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class S3Server:
    """moto on loopback, checking every signature against its IAM keys."""

    port: int
    process: subprocess.Popen[bytes]
    access_key: str = ""
    secret_key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str = "s3") -> object:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def new_access_key(self, user: str = "relay") -> tuple[str, str]:
        """Another IAM key for ``user`` (needs an authenticated call)."""
        iam = self.client("iam")
        key = iam.create_access_key(UserName=user)["AccessKey"]  # type: ignore[attr-defined]
        return key["AccessKeyId"], key["SecretAccessKey"]


def start_s3(
    workdir: Path, module: str = "tests.moto_keepalive", extra_env: dict[str, str] | None = None
) -> S3Server:
    port = free_port()
    log = workdir / f"moto-{port}.log" if module != "tests.moto_keepalive" else workdir / "moto.log"
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(FREE_CALLS), **(extra_env or {}))
    process = subprocess.Popen(
        [sys.executable, "-m", module, "127.0.0.1", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    server = S3Server(port, process)
    wait_for_port(port, process, log)
    iam = boto3.client(
        "iam",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="relay")
    iam.put_user_policy(
        UserName="relay",
        PolicyName="all",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Action":"*","Resource":"*"}]}',
    )
    key = iam.create_access_key(UserName="relay")["AccessKey"]
    server.access_key, server.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    return server


@dataclass
class Relay:
    """A running ``twistd -n s3relay`` process."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    scheme: str = "http"
    clients: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The relay's log, one JSON object per line."""
        return [json.loads(line) for line in self.output().splitlines() if line.strip()]

    def access(self, request_id: str) -> dict[str, Any]:
        """The access record of ``request_id`` (waiting briefly for the log line)."""
        for _ in range(50):
            for record in self.records():
                if record.get("access", {}).get("request_id") == request_id:
                    return dict(record["access"])
            time.sleep(0.1)
        raise AssertionError(f"no access record for {request_id}")


def relay_command(config: Path) -> list[str]:
    twistd = str(Path(sys.executable).parent / "twistd")
    return [twistd, "-n", "--pidfile=", "--logger=s3relay.logs.observer",
            "s3relay", "--config", str(config)]


def relay_env() -> dict[str, str]:
    """The environment for a relay child: this checkout's plugin and package first."""
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{path}" if path else str(REPO))


def start_relay(workdir: Path, config_text: str, port: int, scheme: str = "http",
                env: dict[str, str] | None = None) -> Relay:
    config = workdir / f"relay-{port}.ini"
    config.write_text(config_text)
    log = workdir / f"relay-{port}.log"
    process = subprocess.Popen(
        relay_command(config),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env or relay_env(),
        cwd=workdir,
    )
    relay = Relay(port, process, log, scheme)
    wait_for_port(port, process, log)
    return relay


@dataclass(frozen=True)
class Usage:
    """What a process holds: file descriptors, memory and TCP connections."""

    fds: int
    rss_kib: int
    peak_rss_kib: int
    #: Established TCP connections as (local port, remote port).
    connections: tuple[tuple[int, int], ...]

    def accepted(self, port: int) -> int:
        """Established connections accepted on the listening ``port``."""
        return sum(local == port for local, _ in self.connections)

    def to(self, port: int) -> int:
        """Established connections to ``port`` (e.g. the upstream's)."""
        return sum(remote == port for _, remote in self.connections)


def process_usage(pid: int) -> Usage:
    """``pid``'s open fds, VmRSS/VmHWM and established TCP connections, from /proc."""
    inodes = set()
    fds = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        fds += 1
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            memory[name] = int(value.split()[0])
    connections = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED, ours
                local, remote = fields[1], fields[2]
                connections.append((int(local.rsplit(":", 1)[1], 16),
                                    int(remote.rsplit(":", 1)[1], 16)))
    return Usage(fds, memory["VmRSS"], memory["VmHWM"], tuple(connections))
