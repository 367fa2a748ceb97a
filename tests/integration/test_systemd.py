"""sd_notify: READY=1 once listening, STOPPING=1 on shutdown, on a test NOTIFY_SOCKET."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from twisted.internet.defer import Deferred

from s3relay.ops.systemd import Listeners, sd_notify
from tests import harness
from tests.integration.conftest import relay_config


def notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    return sock


def test_sd_notify_sends_to_the_socket(tmp_path: Path) -> None:
    sock = notify_socket(tmp_path / "notify")
    with sock:
        assert sd_notify(b"READY=1", {"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert sock.recv(100) == b"READY=1"
    assert sd_notify(b"READY=1", {}) is False


def test_sd_notify_abstract_socket() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0s3relay-test-notify")
        assert sd_notify(b"STOPPING=1", {"NOTIFY_SOCKET": "@s3relay-test-notify"})
        assert sock.recv(100) == b"STOPPING=1"


class FakeEndpoint:
    def __init__(self) -> None:
        self.pending: Deferred[object] = Deferred()

    def listen(self, factory: object) -> Deferred[object]:
        return self.pending


def test_ready_only_when_every_listener_is_bound() -> None:
    calls: list[str] = []
    listeners = Listeners(lambda: calls.append("ready"))
    first, second = FakeEndpoint(), FakeEndpoint()
    ports = [listeners.watch(first).listen(None), listeners.watch(second).listen(None)]  # type: ignore[arg-type]
    first.pending.callback("port 1")
    assert not listeners.ready and calls == []
    second.pending.callback("port 2")
    assert listeners.ready and calls == ["ready"]
    assert [p.result for p in ports] == ["port 1", "port 2"]


def test_relay_process_notifies_systemd(workdir: Path, s3: harness.S3Server,
                                        self_key: tuple[str, str], tmp_path: Path) -> None:
    port = harness.free_port()
    config = tmp_path / "relay.ini"
    config.write_text(relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key))
    sock = notify_socket(tmp_path / "notify")
    env = dict(harness.relay_env(), NOTIFY_SOCKET=str(tmp_path / "notify"))
    process = subprocess.Popen(harness.relay_command(config), env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert sock.recv(100) == b"READY=1\nSTATUS=listening"
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # really listening
        process.send_signal(signal.SIGTERM)
        assert sock.recv(100) == b"STOPPING=1"
        # twistd re-raises the signal it stopped on; systemd counts SIGTERM as clean.
        assert process.wait(20) in (0, -signal.SIGTERM)
    finally:
        sock.close()
        harness.stop(process)
