"""Socket activation: the relay serves on a listening socket it inherits (LISTEN_FDS).

systemd binds port 443 in ``s3relay.socket`` and hands the socket over as
fd 3 with LISTEN_FDS=1, LISTEN_FDNAMES=s3relay.socket and LISTEN_PID set to
the service's pid; the relay needs no capability.  (Twisted 26 ignores the
sockets unless LISTEN_FDNAMES names as many as LISTEN_FDS counts.)  Here the
test binds the socket, and a small wrapper moves it to fd 3 and sets
LISTEN_PID to its own pid before exec'ing twistd (exec keeps the pid), as
systemd does.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet.testing import MemoryReactorClock

from s3relay.config import ConfigError
from s3relay.listen.endpoints import check_listener, listen_endpoint
from tests import harness
from tests.integration.conftest import boto_client, relay_config

WRAPPER = (
    "import os, sys\n"
    "os.dup2(int(sys.argv[1]), 3)\n"
    "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1',\n"
    "                  LISTEN_FDNAMES='s3relay.socket')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def start_activated(workdir: Path, config_text: str, name: str) -> tuple[harness.Relay, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = workdir / f"activated-{name}.ini"
    config.write_text(config_text)
    log = workdir / f"activated-{name}.log"
    env = harness.relay_env()
    env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_PID", None)
    process = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(sock.fileno()), *harness.relay_command(config)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=workdir,
        pass_fds=(sock.fileno(),),
    )
    relay = harness.Relay(port, process, log)
    return relay, sock


def wait_answering(relay: harness.Relay, wrap: Any = None) -> None:
    """Wait for a first HTTP answer: the socket listens before the relay
    runs, so connecting proves nothing; a request waits in the backlog."""
    timeout = harness.STARTUP_SECONDS * 2
    with socket.create_connection(("127.0.0.1", relay.port), timeout=timeout) as raw:
        conn = wrap(raw) if wrap else raw
        conn.sendall(b"GET / HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n")
        answer = conn.recv(12)
    assert answer.startswith(b"HTTP/1.1 403"), (answer, relay.output())


@pytest.fixture(scope="module")
def activated(workdir: Path, s3: harness.S3Server,
              self_key: tuple[str, str]) -> Iterator[harness.Relay]:
    text = relay_config(s3, "systemd:domain=INET:index=0", self_key)
    relay, sock = start_activated(workdir, text, "plain")
    sock.close()  # the child holds its own copy
    wait_answering(relay)
    yield relay
    harness.stop(relay.process)


@pytest.fixture(scope="module")
def activated_tls(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
                  tls_files: tuple[Path, Path]) -> Iterator[harness.Relay]:
    cert, key = tls_files
    text = relay_config(s3, "systemd:domain=INET:index=0", self_key).replace(
        "[server]\n", f"[server]\ntls_certificate = {cert}\ntls_private_key = {key}\n", 1)
    relay, sock = start_activated(workdir, text, "tls")
    sock.close()
    relay.scheme = "https"
    ctx = ssl.create_default_context(cafile=str(cert))
    wait_answering(relay, lambda raw: ctx.wrap_socket(raw, server_hostname="127.0.0.1"))
    yield relay
    harness.stop(relay.process)


def test_serves_on_inherited_socket(activated: harness.Relay, upstream: Any,
                                    bucket: str) -> None:
    client = boto_client(activated.url)
    client.put_object(Bucket=bucket, Key="via-systemd", Body=b"activated")
    assert upstream.get_object(Bucket=bucket, Key="via-systemd")["Body"].read() == b"activated"
    assert activated.process.poll() is None


def test_serves_tls_on_inherited_socket(activated_tls: harness.Relay,
                                        tls_files: tuple[Path, Path], upstream: Any,
                                        bucket: str) -> None:
    client = boto_client(activated_tls.url, verify=str(tls_files[0]))
    client.put_object(Bucket=bucket, Key="tls-via-systemd", Body=b"activated")
    assert client.get_object(Bucket=bucket, Key="tls-via-systemd")["Body"].read() == b"activated"


def test_no_inherited_socket_is_a_config_error() -> None:
    assert "LISTEN_FDS" not in os.environ
    with pytest.raises(ConfigError) as raised:
        listen_endpoint(MemoryReactorClock(), "systemd:domain=INET6:index=0")
    assert raised.value.key == "listen" and "s3relay.socket" in str(raised.value)
    # ExecStartPre (--check-config) gets no sockets from systemd: not an error there.
    check_listener(MemoryReactorClock(), "systemd:domain=INET6:index=0")


def test_check_config_accepts_systemd_listener(tmp_path: Path, s3: harness.S3Server,
                                               self_key: tuple[str, str],
                                               tls_files: tuple[Path, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """ExecStartPre=s3relay --check-config runs without the socket: still ok."""
    from s3relay.cli import main

    cert, key = tls_files
    config = tmp_path / "s3relay.ini"
    config.write_text(relay_config(s3, "systemd:domain=INET6:index=0", self_key).replace(
        "[server]\n", f"[server]\ntls_certificate = {cert}\ntls_private_key = {key}\n", 1))
    assert main(["--check-config", str(config)]) == 0
    assert ": ok (" in capsys.readouterr().out
    config.write_text(config.read_text().replace(f"tls_private_key = {key}",
                                                 f"tls_private_key = {cert}"))
    assert main(["--check-config", str(config)]) == 1
    assert "tls_private_key" in capsys.readouterr().err
