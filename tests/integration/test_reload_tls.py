"""SIGHUP re-reads the client-facing TLS certificate, key and client CA.

Unit tests build ``ServerContext``/``ListenerTls`` from real files; the
end-to-end tests renew the certificate of a running ``twistd`` relay (the
ACME case: same file names, new content), break it, and change the mTLS
client CA, checking what new and already open connections see.
"""

from __future__ import annotations

import http.client
import shutil
import signal
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from cryptography import x509
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import implementer

from s3relay import cli
from s3relay.config import ConfigError, parse_config
from s3relay.listen.endpoints import (
    ListenerTls,
    ServerContext,
    TLSServerEndpoint,
    listen_endpoint,
)
from s3relay.listen.tls import CertificateFacts
from tests import harness
from tests.certs import (
    Authority,
    make_ca,
    make_client_certificate,
    make_server_certificate,
)
from tests.integration.conftest import CLIENT_KEY, relay_config
from tests.rawclient import sign

NEW_KEY = ("AKIDRELAYTLSRELOAD01", "tls-reload-secret")
UPSTREAM = "[upstream]\nurl = http://127.0.0.1:9000\nregion = r1\n"
CLIENT = ("[client:alice]\naccess_key_id = AKIDALICE\nsecret_access_key = s3cr3t\n"
          "credentials = self\n")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A server CA, certificates A, B (valid) and C (expired), client CAs and clients."""
    d = tmp_path_factory.mktemp("reload-pki")
    server_ca = make_ca(d, "servers")
    made = {name: make_server_certificate(d, server_ca, name, "127.0.0.1", expired=name == "c")
            for name in ("a", "b", "c")}
    one, two = make_ca(d, "clients-one"), make_ca(d, "clients-two")
    return {
        "dir": d,
        "ca": server_ca,
        "certs": made,
        "client_cas": (one, two),
        "client_one": make_client_certificate(d, one, "client-one", {"CN": "one"}),
        "client_two": make_client_certificate(d, two, "client-two", {"CN": "two"}),
    }


def install(pki: dict[str, Any], name: str, live: Path, key_of: str | None = None) -> int:
    """Copy certificate ``name`` (and the key of ``key_of``) over the live files."""
    cert, _, parsed = pki["certs"][name]
    shutil.copyfile(cert, live / "cert.pem")
    shutil.copyfile(pki["certs"][key_of or name][1], live / "key.pem")
    return int(parsed.serial_number)


def ssl_listen(live: Path, port: int = 0) -> str:
    return (f"ssl:{port}:interface=127.0.0.1:privateKey={live / 'key.pem'}"
            f":certKey={live / 'cert.pem'}")


def server_config(listen: str, server: str = "") -> Any:
    return parse_config(f"[server]\nlisten = {listen}\n{server}\n{UPSTREAM}{CLIENT}").server


def not_after(context: ServerContext) -> float:
    """The served certificate's notAfter, as Unix time."""
    certificate = context.serverConnectionForTLS(None).get_certificate()
    assert certificate is not None and (stamp := certificate.get_notAfter()) is not None
    when = datetime.strptime(stamp.decode("ascii"), "%Y%m%d%H%M%SZ")
    return when.replace(tzinfo=timezone.utc).timestamp()


def served_serial(context: ServerContext) -> int:
    certificate = context.serverConnectionForTLS(None).get_certificate()
    assert certificate is not None
    return int(certificate.get_serial_number())


@implementer(ILogObserver)
class Captured:
    """Log messages emitted while the ``with`` block runs."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        self.messages.append(formatEvent(event))

    def __enter__(self) -> Captured:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)

    def text(self) -> str:
        return "\n".join(self.messages)


# --- unit: the swappable context ----------------------------------------------------------


@pytest.fixture
def live(pki: dict[str, Any], tmp_path: Path) -> Path:
    install(pki, "a", tmp_path)
    return tmp_path


def listener(live: Path, server: str = "", expiry: Callable[[float], object] = lambda _: None
             ) -> tuple[ServerContext, ListenerTls]:
    description = ssl_listen(live)
    endpoint = listen_endpoint(MemoryReactorClock(), description,
                               tls=server_config(description, server).tls)
    assert isinstance(endpoint, TLSServerEndpoint)
    return endpoint.context, ListenerTls(description, endpoint, time.time, expiry)


def test_swap_reaches_new_connections_only(pki: dict[str, Any], live: Path) -> None:
    expiries: list[float] = []
    context, tls = listener(live, expiry=expiries.append)
    tls.log_served()
    assert expiries == [not_after(context)]
    serial_a = int(pki["certs"]["a"][2].serial_number)
    assert served_serial(context) == serial_a
    open_before = context.serverConnectionForTLS(None)
    serial_b = install(pki, "b", live)
    swap = tls.prepare(server_config(ssl_listen(live)))
    assert served_serial(context) == serial_a  # prepared, not swapped in yet
    with Captured() as log:
        swap()
    assert served_serial(context) == serial_b
    assert expiries[1:] == [not_after(context)]  # the metric follows the served certificate
    certificate = open_before.get_certificate()
    assert certificate is not None and certificate.get_serial_number() == serial_a
    assert f"serial {serial_b:x}" in log.text() and "EXPIRED" not in log.text()


@pytest.mark.parametrize("damage", ["garbage", "mismatched key", "missing"])
def test_broken_certificate_refused_old_context_stays(pki: dict[str, Any], live: Path,
                                                      damage: str) -> None:
    context, tls = listener(live)
    serial_a = served_serial(context)
    if damage == "garbage":
        (live / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    elif damage == "mismatched key":
        install(pki, "b", live, key_of="a")
    else:
        (live / "key.pem").unlink()
    with pytest.raises(ConfigError) as refused:
        tls.prepare(server_config(ssl_listen(live)))
    assert refused.value.section == "server"
    assert served_serial(context) == serial_a


def test_expired_certificate_served_with_loud_warning(pki: dict[str, Any], live: Path) -> None:
    context, tls = listener(live)
    serial_c = install(pki, "c", live)
    with Captured() as log:
        tls.prepare(server_config(ssl_listen(live)))()
    assert served_serial(context) == serial_c
    assert "EXPIRED on" in log.text()


def test_running_listen_description_is_kept(pki: dict[str, Any], live: Path,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    """A new ``listen`` waits for a restart: the running one's files are re-read."""
    context, tls = listener(live)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    install(pki, "c", elsewhere)
    serial_b = install(pki, "b", live)
    tls.prepare(server_config(ssl_listen(elsewhere, 8443)))()
    assert served_serial(context) == serial_b


def test_tls_settings_of_new_config_apply(pki: dict[str, Any], live: Path) -> None:
    context, tls = listener(live)
    assert context.options.verify is False
    ca = pki["client_cas"][0].cert_path
    tls.prepare(server_config(ssl_listen(live), f"tls_client_ca = {ca}"))()
    assert context.options.verify is True and context.options.requireCertificate is True
    with pytest.raises(ConfigError) as refused:
        tls.prepare(server_config(ssl_listen(live), "tls_ciphers = NO-SUCH-CIPHER"))
    assert refused.value.key == "tls_ciphers"
    assert context.options.verify is True


def test_tls_cannot_be_switched_on_or_off_by_reload(pki: dict[str, Any], live: Path) -> None:
    plain = listen_endpoint(MemoryReactorClock(), "tcp:0:interface=127.0.0.1")
    tls = ListenerTls("tcp:0:interface=127.0.0.1", plain, time.time)
    keys = f"tls_certificate = {live / 'cert.pem'}\ntls_private_key = {live / 'key.pem'}"
    with Captured() as log:
        tls.prepare(server_config("tcp:0:interface=127.0.0.1", keys))()
    assert "switching the listener's TLS on takes a restart" in log.text()
    description = "tcp:0:interface=127.0.0.1"
    wrapped = listen_endpoint(MemoryReactorClock(), description,
                              tls=server_config(description, keys).tls)
    assert isinstance(wrapped, TLSServerEndpoint)
    tls = ListenerTls(description, wrapped, time.time)
    serial_a = served_serial(wrapped.context)
    with Captured() as log:
        tls.prepare(server_config(description))()
    assert "switching the listener's TLS off" in log.text()
    assert served_serial(wrapped.context) == serial_a


def test_truncated_files_refused(pki: dict[str, Any], live: Path) -> None:
    """A renewal caught half-written: no chain cut short, no empty client CA list."""
    context, tls = listener(live)
    ca = pki["client_cas"][0].cert_path
    half = live / "half-ca.pem"
    half.write_bytes(ca.read_bytes()[:200])
    with pytest.raises(ConfigError) as refused:
        tls.prepare(server_config(ssl_listen(live), f"tls_client_ca = {half}"))
    assert refused.value.key == "tls_client_ca" and "truncated" in str(refused.value)
    keys = f"tls_certificate = {live / 'chain.pem'}\ntls_private_key = {live / 'key.pem'}"
    (live / "chain.pem").write_bytes((live / "cert.pem").read_bytes()
                                     + pki["ca"].cert_path.read_bytes()[:300])
    with pytest.raises(ConfigError) as refused:
        listen_endpoint(MemoryReactorClock(), "tcp:0", tls=server_config("tcp:0", keys).tls)
    assert refused.value.key == "tls_certificate"
    assert context.options.verify is False


def test_certificate_validity_problems() -> None:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    facts = CertificateFacts("CN=x", 0x1F, start, start + timedelta(days=90))
    assert facts.validity_problem(start + timedelta(days=10)) is None
    assert "expires in 6 days" in str(facts.validity_problem(start + timedelta(days=83, hours=1)))
    assert "EXPIRED" in str(facts.validity_problem(start + timedelta(days=90)))
    assert "NOT VALID before" in str(facts.validity_problem(start - timedelta(seconds=1)))
    assert facts.describe() == "CN=x serial 1f, valid until 2026-04-01 00:00:00 UTC"


def test_check_config_validates_tls_files(pki: dict[str, Any], live: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "relay.ini"
    path.write_text(f"[server]\nlisten = {ssl_listen(live)}\n{UPSTREAM}{CLIENT}")
    assert cli.main(["--check-config", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err
    install(pki, "c", live)
    assert cli.main(["--check-config", str(path)]) == 0
    assert "warning: certificate CN=c serial" in capsys.readouterr().err
    install(pki, "b", live, key_of="a")
    assert cli.main(["--check-config", str(path)]) == 1
    assert "listen: privateKey: Certificate public and private keys do not match" in \
        capsys.readouterr().err
    path.write_text(f"[server]\nlisten = tcp:0\ntls_certificate = {live / 'cert.pem'}\n"
                    f"tls_private_key = {live / 'key.pem'}\n{UPSTREAM}{CLIENT}")
    assert cli.main(["--check-config", str(path)]) == 1
    assert "tls_private_key: unusable" in capsys.readouterr().err


# --- end to end: a real relay process --------------------------------------------------------


def peer_serial(tls: ssl.SSLSocket) -> int:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def new_connection_serial(port: int) -> int:
    """The serial of the certificate a fresh connection is shown (not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return peer_serial(tls)


def list_buckets(connection: http.client.HTTPSConnection, url: str,
                 key: tuple[str, str] = CLIENT_KEY) -> int:
    """A signed ListBuckets on ``connection``; its status (the body is read)."""
    headers = sign("GET", f"{url}/", {}, "UNSIGNED-PAYLOAD", key)
    connection.request("GET", "/", headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def reloads(relay: harness.Relay, what: str, before: int) -> bool:
    """Whether ``what`` appeared in the relay's log after the first ``before`` characters."""
    return harness.eventually(lambda: what in relay.output()[before:])


@pytest.fixture
def renewing_relay(workdir: Path, s3: harness.S3Server, self_key: tuple[str, str],
                   pki: dict[str, Any], tmp_path: Path) -> Iterator[tuple[harness.Relay, Path]]:
    install(pki, "a", tmp_path)
    port = harness.free_port()
    relay = harness.start_relay(workdir, relay_config(s3, ssl_listen(tmp_path, port), self_key),
                                port, "https")
    yield relay, tmp_path
    harness.stop(relay.process)


def test_sighup_serves_renewed_certificate_open_connections_keep_theirs(
        renewing_relay: tuple[harness.Relay, Path], pki: dict[str, Any]) -> None:
    relay, live = renewing_relay
    serial_a = int(pki["certs"]["a"][2].serial_number)
    trust = ssl.create_default_context(cafile=str(pki["ca"].cert_path))
    kept = http.client.HTTPSConnection("127.0.0.1", relay.port, timeout=30, context=trust)
    assert list_buckets(kept, relay.url) == 200
    kept_socket = kept.sock
    assert isinstance(kept_socket, ssl.SSLSocket) and peer_serial(kept_socket) == serial_a

    mark = len(relay.output())
    serial_b = install(pki, "b", live)
    relay.process.send_signal(signal.SIGHUP)
    assert reloads(relay, f"client TLS certificate CN=b serial {serial_b:x}", mark), \
        relay.output()[-3000:]
    assert new_connection_serial(relay.port) == serial_b
    fresh = http.client.HTTPSConnection("127.0.0.1", relay.port, timeout=30, context=trust)
    assert list_buckets(fresh, relay.url) == 200  # B verifies against the same CA
    fresh.close()
    # The keep-alive connection from before the reload: same socket, certificate A, working.
    assert list_buckets(kept, relay.url) == 200
    assert kept.sock is kept_socket and peer_serial(kept_socket) == serial_a
    kept.close()

    # A broken renewal: refused as a whole (a client key added with it is not
    # taken either), certificate B still served, relay alive.
    config = relay.log.parent / f"relay-{relay.port}.ini"
    config.write_text(config.read_text() + f"\n[client:new]\naccess_key_id = {NEW_KEY[0]}\n"
                      f"secret_access_key = {NEW_KEY[1]}\ncredentials = main\n")
    for damage in ("garbage", "mismatched key"):
        if damage == "garbage":
            (live / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
        else:
            install(pki, "a", live, key_of="b")
        mark = len(relay.output())
        relay.process.send_signal(signal.SIGHUP)
        assert reloads(relay, "reload refused, the running config stays", mark), damage
        assert relay.process.poll() is None
        assert new_connection_serial(relay.port) == serial_b, damage
        assert https_status(relay, trust, NEW_KEY) == 403, damage
    assert https_status(relay, trust, CLIENT_KEY) == 200

    # An expired certificate is served (not refused), with a loud warning.
    mark = len(relay.output())
    serial_c = install(pki, "c", live)
    relay.process.send_signal(signal.SIGHUP)
    assert reloads(relay, "EXPIRED on", mark), relay.output()[-3000:]
    assert new_connection_serial(relay.port) == serial_c

    assert https_status(relay, None, NEW_KEY) == 200  # config and certificate went in together

    # A new listen address waits for a restart; the running listener stays.
    config.write_text(config.read_text().replace(f"ssl:{relay.port}:", f"ssl:{relay.port + 1}:"))
    install(pki, "b", live)
    mark = len(relay.output())
    relay.process.send_signal(signal.SIGHUP)
    assert reloads(relay, "take effect at the next restart", mark)
    assert reloads(relay, f"client TLS certificate CN=b serial {serial_b:x}", mark)
    assert new_connection_serial(relay.port) == serial_b


def https_status(relay: harness.Relay, trust: ssl.SSLContext | None,
                 key: tuple[str, str]) -> int:
    """ListBuckets with ``key`` over a new connection (certificate unchecked without ``trust``)."""
    if trust is None:
        trust = ssl.create_default_context()
        trust.check_hostname, trust.verify_mode = False, ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", relay.port, timeout=30, context=trust)
    try:
        return list_buckets(connection, relay.url, key)
    finally:
        connection.close()


def test_requests_during_reloads_all_succeed(renewing_relay: tuple[harness.Relay, Path],
                                             pki: dict[str, Any]) -> None:
    """New connections keep being served while the certificate swaps back and forth."""
    relay, live = renewing_relay
    trust = ssl.create_default_context(cafile=str(pki["ca"].cert_path))
    statuses: list[int | str] = []
    stop = threading.Event()

    def load() -> None:
        for _ in range(2000):  # bounded; stopped once the reloads are done
            if stop.is_set():
                return
            try:
                statuses.append(https_status(relay, trust, CLIENT_KEY))
            except (OSError, http.client.HTTPException) as e:
                statuses.append(repr(e))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        assert harness.eventually(lambda: len(statuses) > 0)
        for round, name in enumerate(["b", "a", "b", "a"]):
            serial = install(pki, name, live)
            mark = len(relay.output())
            relay.process.send_signal(signal.SIGHUP)
            assert reloads(relay, f"serial {serial:x}", mark), round
            assert new_connection_serial(relay.port) == serial
    finally:
        stop.set()
        worker.join(120)
    assert statuses and set(statuses) == {200}, [s for s in statuses if s != 200][:5]


def mtls_status(port: int, url: str, ca: Authority, client: tuple[Path, Path]) -> int | None:
    """ListBuckets over a new connection with a client certificate; None if TLS refused."""
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    ctx.load_cert_chain(str(client[0]), str(client[1]))
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx)
    try:
        return list_buckets(connection, url)
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
        return None
    finally:
        connection.close()


def test_sighup_applies_new_client_ca(workdir: Path, s3: harness.S3Server,
                                      self_key: tuple[str, str], pki: dict[str, Any],
                                      tmp_path: Path) -> None:
    """mTLS on a ``tcp:`` listener with ``tls_certificate``: the client CA file is re-read."""
    install(pki, "a", tmp_path)
    one, two = pki["client_cas"]
    client_ca = tmp_path / "client-ca.pem"
    shutil.copyfile(one.cert_path, client_ca)
    port = harness.free_port()
    text = relay_config(s3, f"tcp:{port}:interface=127.0.0.1", self_key).replace(
        "[server]\n",
        f"[server]\ntls_certificate = {tmp_path / 'cert.pem'}\n"
        f"tls_private_key = {tmp_path / 'key.pem'}\ntls_client_ca = {client_ca}\n", 1)
    relay = harness.start_relay(workdir, text, port, "https")
    try:
        assert mtls_status(port, relay.url, pki["ca"], pki["client_one"]) == 200
        assert mtls_status(port, relay.url, pki["ca"], pki["client_two"]) is None

        shutil.copyfile(two.cert_path, client_ca)
        mark = len(relay.output())
        relay.process.send_signal(signal.SIGHUP)
        assert reloads(relay, "reloaded ", mark), relay.output()[-3000:]
        assert mtls_status(port, relay.url, pki["ca"], pki["client_two"]) == 200
        assert mtls_status(port, relay.url, pki["ca"], pki["client_one"]) is None
        assert relay.process.poll() is None
    finally:
        harness.stop(relay.process)
