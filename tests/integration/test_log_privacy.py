"""``[server] log_keys``: object keys in access records as they are, hashed, or left out."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

from s3relay.config import ConfigError, parse_config
from s3relay.ops.keylog import KeyLogging
from tests import harness
from tests.integration.conftest import boto_client, relay_config

UPSTREAM = "[upstream]\nurl = http://127.0.0.1:9000\nregion = r1\n"
SALT = "a-salt-of-24-characters!"
SECRET_KEY_NAME = "invoices/jane.doe@example.com.pdf"


def server(lines: str) -> Any:
    return parse_config(f"[server]\n{lines}\n{UPSTREAM}").server


def test_default_is_yes() -> None:
    logging = server("").log_keys
    assert logging == KeyLogging("yes", None)
    text = logging.key_text(b"process-salt")
    assert text is not None and text("ünï/k".encode()) == "ünï/k"


def test_no_leaves_the_key_out() -> None:
    assert server("log_keys = no").log_keys.key_text(b"process-salt") is None


def test_hash_with_process_salt() -> None:
    logging = server("log_keys = hash").log_keys
    assert logging.salt is None
    one, other = logging.key_text(b"salt-one"), logging.key_text(b"salt-two")
    assert one is not None and other is not None
    expected = hmac.new(b"salt-one", b"k", hashlib.sha256).hexdigest()
    assert one(b"k") == "hmac-sha256:" + expected == one(b"k")
    assert other(b"k") != one(b"k")


def test_hash_with_configured_salt(tmp_path: Path) -> None:
    inline = server(f"log_keys = hash\nlog_key_salt = {SALT}").log_keys
    (tmp_path / "salt").write_text(SALT + "\n")
    from_file = parse_config(
        f"[server]\nlog_keys = hash\nlog_key_salt_file = salt\n{UPSTREAM}", str(tmp_path)
    ).server.log_keys
    assert inline == from_file and inline.salt == SALT.encode()
    assert SALT not in repr(inline)
    text = inline.key_text(b"ignored-process-salt")
    assert text is not None
    assert text(b"k") == "hmac-sha256:" + hmac.new(SALT.encode(), b"k", hashlib.sha256).hexdigest()


@pytest.mark.parametrize("lines, key, message", [
    ("log_keys = maybe", "log_keys", "must be yes, hash or no"),
    ("log_keys = YES", "log_keys", "must be yes, hash or no"),
    (f"log_keys = yes\nlog_key_salt = {SALT}", "log_key_salt", "only with log_keys = hash"),
    (f"log_keys = no\nlog_key_salt = {SALT}", "log_key_salt", "only with log_keys = hash"),
    ("log_keys = hash\nlog_key_salt = short", "log_key_salt", "at least 16"),
    (f"log_keys = hash\nlog_key_salt = {SALT}\nlog_key_salt_file = x", "log_key_salt",
     "not both"),
    ("log_keys = hash\nlog_key_salt_file = /nonexistent/salt", "log_key_salt_file",
     "cannot read"),
])
def test_errors(lines: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        server(lines)
    assert (raised.value.section, raised.value.key) == ("server", key)
    assert message in str(raised.value) and SALT not in str(raised.value)


# --- end to end -------------------------------------------------------------------------


def start(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
          lines: str) -> harness.Relay:
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key)
    text = text.replace("[server]\n", f"[server]\n{lines}\n", 1)
    return harness.start_relay(workdir, text, port)


@pytest.fixture(scope="module")
def hashing(workdir: Path, s3: harness.S3Server,
            self_key: tuple[str, str]) -> Iterator[harness.Relay]:
    relay = start(workdir, s3, self_key, f"log_keys = hash\nlog_key_salt = {SALT}")
    yield relay
    harness.stop(relay.process)


@pytest.fixture(scope="module")
def hashing_per_process(workdir: Path, s3: harness.S3Server,
                        self_key: tuple[str, str]) -> Iterator[harness.Relay]:
    relay = start(workdir, s3, self_key, "log_keys = hash")
    yield relay
    harness.stop(relay.process)


@pytest.fixture(scope="module")
def silent(workdir: Path, s3: harness.S3Server,
           self_key: tuple[str, str]) -> Iterator[harness.Relay]:
    relay = start(workdir, s3, self_key, "log_keys = no")
    yield relay
    harness.stop(relay.process)


def traffic(relay: harness.Relay, bucket: str) -> list[dict[str, Any]]:
    """A PUT, a GET and a refused GET of SECRET_KEY_NAME; their access records."""
    client = boto_client(relay.url)
    client.put_object(Bucket=bucket, Key=SECRET_KEY_NAME, Body=b"x")
    assert client.get_object(Bucket=bucket, Key=SECRET_KEY_NAME)["Body"].read() == b"x"
    with pytest.raises(ClientError):
        client.get_object(Bucket=bucket, Key=SECRET_KEY_NAME + ".missing")
    records = [r["access"] for r in relay.records() if "access" in r]
    mine = [r for r in records if r["bucket"] == bucket]
    assert [r["operation"] for r in mine] == ["PutObject", "GetObject", "GetObject"]
    # Nowhere in the log, not even in the message lines.
    assert "jane.doe" not in relay.output()
    assert "invoices" not in relay.output()
    return mine


def test_hash_in_records(hashing: harness.Relay, bucket: str) -> None:
    put, get, missing = traffic(hashing, bucket)
    expected = hmac.new(SALT.encode(), SECRET_KEY_NAME.encode(), hashlib.sha256).hexdigest()
    assert put["key"] == get["key"] == "hmac-sha256:" + expected
    assert missing["key"].startswith("hmac-sha256:") and missing["key"] != put["key"]


def test_per_process_salt_in_records(hashing_per_process: harness.Relay, bucket: str) -> None:
    put, get, _ = traffic(hashing_per_process, bucket)
    configured = hmac.new(SALT.encode(), SECRET_KEY_NAME.encode(), hashlib.sha256).hexdigest()
    assert put["key"] == get["key"] and put["key"].startswith("hmac-sha256:")
    assert put["key"] != "hmac-sha256:" + configured


def test_no_keys_in_records(silent: harness.Relay, bucket: str) -> None:
    for record in traffic(silent, bucket):
        assert "key" not in record and record["bucket"] == bucket


def test_yes_keeps_keys(relay: harness.Relay, bucket: str) -> None:
    client = boto_client(relay.url)
    client.put_object(Bucket=bucket, Key=SECRET_KEY_NAME, Body=b"x")
    records = [r["access"] for r in relay.records() if "access" in r]
    assert [r["key"] for r in records if r["bucket"] == bucket] == [SECRET_KEY_NAME]
