"""SIGHUP reload of a real relay process, with a request in flight."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

from s3relay.s3 import sigv4
from tests import harness
from tests.integration.conftest import CLIENT_KEY, relay_config, works
from tests.rawclient import sign

NEW_KEY = ("AKIDRELAYRELOADED001", "reloaded-secret")


def test_sighup_swaps_config_and_keeps_in_flight_requests(
    workdir: Path, s3: harness.S3Server, self_key: tuple[str, str], upstream: Any, bucket: str
) -> None:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key)
    relay = harness.start_relay(workdir, text, port)
    config = workdir / f"relay-{port}.ini"
    try:
        assert not works(relay.url, NEW_KEY)
        data = os.urandom(2 * 1024 * 1024)
        url = f"{relay.url}/{bucket}/in-flight"
        headers = sign("PUT", url, {"content-length": str(len(data))}, sigv4.UNSIGNED_PAYLOAD,
                       CLIENT_KEY)
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        head = [f"PUT /{bucket}/in-flight HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data[:1024 * 1024])

        config.write_text(text + f"\n[client:new]\naccess_key_id = {NEW_KEY[0]}\n"
                          f"secret_access_key = {NEW_KEY[1]}\ncredentials = main\n")
        relay.process.send_signal(signal.SIGHUP)
        assert harness.eventually(lambda: works(relay.url, NEW_KEY)), relay.output()[-2000:]

        sock.sendall(data[1024 * 1024:])
        answer = sock.recv(65536)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert upstream.get_object(Bucket=bucket, Key="in-flight")["Body"].read() == data

        config.write_text(config.read_text() + "\n[bogus]\n")
        relay.process.send_signal(signal.SIGHUP)
        assert harness.eventually(lambda: "reload refused" in relay.output())
        assert "[bogus]: unknown section" in relay.output()
        assert works(relay.url, NEW_KEY) and relay.process.poll() is None
    finally:
        harness.stop(relay.process)
