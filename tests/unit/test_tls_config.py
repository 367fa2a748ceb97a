"""Client-facing TLS settings, certificate-subject bindings and the listener they build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from OpenSSL import crypto
from twisted.internet.testing import MemoryReactorClock

from s3relay.access.client_cert import check_binding, peer_subject
from s3relay.config import ConfigError, parse_config
from s3relay.listen.endpoints import TLSServerEndpoint, listen_endpoint
from s3relay.listen.tls import INTERMEDIATE_CIPHERS, TlsSettings, parse_subject
from s3relay.s3.errors import S3Error
from tests.certs import make_ca, make_certificate, make_client_certificate

UPSTREAM = "[upstream]\nurl = http://127.0.0.1:9000\nregion = r1\n"
CLIENT = (
    "[client:alice]\naccess_key_id = AKIDALICE\nsecret_access_key = s3cr3t\n"
    "credentials = self\n"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    cert, key = make_certificate(d, "127.0.0.1")
    ca = make_ca(d, "clients")
    client_cert, _ = make_client_certificate(d, ca, "alice", {"CN": "alice", "O": "Example"})
    (d / "junk.pem").write_text("not a certificate\n")
    return {"cert": cert, "key": key, "ca": ca.cert_path, "client": client_cert,
            "junk": d / "junk.pem", "dir": d}


def ssl_listen(pki: dict[str, Path]) -> str:
    return f"ssl:0:interface=127.0.0.1:privateKey={pki['key']}:certKey={pki['cert']}"


def config(server: str, client: str = "", listen: str = "tcp:8080") -> Any:
    return parse_config(f"[server]\nlisten = {listen}\n{server}\n{UPSTREAM}{CLIENT}{client}")


def error(server: str, client: str = "", listen: str = "tcp:8080") -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        config(server, client, listen)
    return raised.value


def test_defaults() -> None:
    tls = config("").server.tls
    assert tls == TlsSettings()
    assert tls.min_version == "1.2" and tls.ciphers == INTERMEDIATE_CIPHERS
    assert not tls.verifies_clients and tls.certificate_pem is None
    assert config("").clients["alice"].certificate_subject is None


def test_all_keys_parse(pki: dict[str, Path]) -> None:
    cfg = config(
        f"tls_min_version = 1.3\ntls_ciphers = ECDHE-ECDSA-AES256-GCM-SHA384\n"
        f"tls_client_ca = {pki['ca']}\ntls_client_auth = optional",
        "certificate_subject = O=Example, cn=alice\n",
        ssl_listen(pki),
    )
    tls = cfg.server.tls
    assert tls.min_version == "1.3" and tls.ciphers == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert tls.client_ca_pem == pki["ca"].read_bytes() and tls.client_auth == "optional"
    assert cfg.clients["alice"].certificate_subject == (("CN", "alice"), ("O", "Example"))


def test_client_auth_defaults_to_required(pki: dict[str, Path]) -> None:
    tls = config(f"tls_client_ca = {pki['ca']}", listen=ssl_listen(pki)).server.tls
    assert tls.client_auth == "required"


def test_certificate_and_key_for_other_listeners(pki: dict[str, Path]) -> None:
    tls = config(f"tls_certificate = {pki['cert']}\ntls_private_key = {pki['key']}").server.tls
    assert tls.certificate_pem == pki["cert"].read_bytes()
    assert tls.private_key_pem == pki["key"].read_bytes()
    assert "private_key_pem" not in repr(tls) and "PRIVATE" not in repr(tls)


@pytest.mark.parametrize(
    "server, key, message",
    [
        ("tls_min_version = 1.1", "tls_min_version", "must be 1.2 or 1.3"),
        ("tls_min_version = TLSv1.3", "tls_min_version", "must be 1.2 or 1.3"),
        ("tls_client_auth = required", "tls_client_auth", "needs tls_client_ca"),
        ("tls_client_ca = {ca}\ntls_client_auth = maybe", "tls_client_auth",
         "must be optional or required"),
        ("tls_client_ca = {junk}", "tls_client_ca", "holds no PEM certificate"),
        ("tls_client_ca = missing.pem", "tls_client_ca", "cannot read"),
        ("tls_certificate = {cert}", "tls_certificate", "give tls_private_key with it"),
        ("tls_private_key = {key}", "tls_certificate", "give tls_private_key with it"),
        ("tls_certificate = {cert}\ntls_private_key = {cert}", "tls_private_key",
         "holds no PEM private key"),
        ("tls_certificate = {junk}\ntls_private_key = {key}", "tls_certificate",
         "holds no PEM certificate"),
    ],
)
def test_errors(pki: dict[str, Path], server: str, key: str, message: str) -> None:
    e = error(server.format(**{k: str(v) for k, v in pki.items()}), listen=ssl_listen(pki)
              if "tls_certificate" not in server and "tls_private_key" not in server
              else "tcp:8080")
    assert e.section == "server" and e.key == key and message in str(e)


def test_certificate_refused_with_ssl_listener(pki: dict[str, Path]) -> None:
    e = error(f"tls_certificate = {pki['cert']}\ntls_private_key = {pki['key']}",
              listen=ssl_listen(pki))
    assert e.key == "tls_certificate" and "certKey" in str(e)


@pytest.mark.parametrize("key", ["tls_min_version = 1.3", "tls_ciphers = HIGH",
                                 "tls_client_ca = {ca}"])
def test_tls_keys_need_a_tls_listener(pki: dict[str, Path], key: str) -> None:
    e = error(key.format(ca=pki["ca"]))
    assert e.key == key.split()[0] and "needs a TLS listener" in str(e)


def test_binding_needs_client_ca(pki: dict[str, Path]) -> None:
    e = error("", "certificate_subject = CN=alice\n", ssl_listen(pki))
    assert (e.section, e.key) == ("client:alice", "certificate_subject")
    assert "needs [server] tls_client_ca" in str(e)


@pytest.mark.parametrize("value, message", [
    ("alice", "is not NAME=value"),
    ("CN=alice,", "is not NAME=value"),
    ("CN=", "is not NAME=value"),
    ("=alice", "is not NAME=value"),
    ("C N=alice", "is not an attribute name"),
    ("CN_x=alice", "is not an attribute name"),
    ("CN=alice\\", "lone backslash"),
])
def test_binding_errors(pki: dict[str, Path], value: str, message: str) -> None:
    e = error(f"tls_client_ca = {pki['ca']}", f"certificate_subject = {value}\n",
              ssl_listen(pki))
    assert e.key == "certificate_subject" and message in str(e)


def test_parse_subject() -> None:
    assert parse_subject("CN=alice,O=Example") == parse_subject(" o = Example , cn = alice ")
    assert parse_subject(r"CN=Doe\, Jane,O=Ex") == (("CN", "Doe, Jane"), ("O", "Ex"))
    assert parse_subject("CN=a") != parse_subject("CN=A")  # values are case-sensitive


# --- listener ---------------------------------------------------------------------------


def test_listener_wraps_ssl_and_systemd_style_endpoints(pki: dict[str, Path]) -> None:
    reactor = MemoryReactorClock()
    ssl_cfg = config(f"tls_min_version = 1.3\ntls_client_ca = {pki['ca']}",
                     listen=ssl_listen(pki))
    assert isinstance(listen_endpoint(reactor, ssl_cfg.server.listen, tls=ssl_cfg.server.tls),
                      TLSServerEndpoint)
    wrapped = config(f"tls_certificate = {pki['cert']}\ntls_private_key = {pki['key']}",
                     listen="tcp:0:interface=127.0.0.1")
    assert isinstance(listen_endpoint(reactor, wrapped.server.listen, tls=wrapped.server.tls),
                      TLSServerEndpoint)
    plain = config("")
    assert not isinstance(listen_endpoint(reactor, plain.server.listen, tls=plain.server.tls),
                          TLSServerEndpoint)


def test_listener_refuses_unusable_cipher_list(pki: dict[str, Path]) -> None:
    cfg = config("tls_ciphers = NO-SUCH-CIPHER", listen=ssl_listen(pki))
    with pytest.raises(ConfigError) as raised:
        listen_endpoint(MemoryReactorClock(), cfg.server.listen, tls=cfg.server.tls)
    assert raised.value.key == "tls_ciphers"


def test_listener_refuses_bad_key(pki: dict[str, Path]) -> None:
    tls = TlsSettings(certificate_pem=pki["cert"].read_bytes(), private_key_pem=b"garbage")
    with pytest.raises(ConfigError) as raised:
        listen_endpoint(MemoryReactorClock(), "tcp:0", tls=tls)
    assert raised.value.key == "listen"


# --- binding check ----------------------------------------------------------------------


class FakeTLSTransport:
    def __init__(self, cert: Any) -> None:
        self._cert = cert

    def getPeerCertificate(self) -> Any:
        return self._cert


def test_peer_subject_and_binding(pki: dict[str, Path]) -> None:
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, pki["client"].read_bytes())
    transport = FakeTLSTransport(cert)
    alice = parse_subject("CN=alice,O=Example")
    assert peer_subject(transport) == alice
    assert peer_subject(FakeTLSTransport(None)) is None
    assert peer_subject(object()) is None  # plain TCP
    check_binding("alice", alice, transport)
    check_binding("bob", None, object())
    for expected, other in [(parse_subject("CN=alice"), transport),
                            (alice, FakeTLSTransport(None)), (alice, object())]:
        with pytest.raises(S3Error) as refused:
            check_binding("alice", expected, other)
        assert refused.value.code == "AccessDenied" and refused.value.status == 403


def test_listener_refuses_key_of_another_certificate(pki: dict[str, Path],
                                                     tmp_path: Path) -> None:
    _, other_key = make_certificate(tmp_path, "127.0.0.1")
    tls = TlsSettings(certificate_pem=pki["cert"].read_bytes(),
                      private_key_pem=other_key.read_bytes())
    with pytest.raises(ConfigError) as raised:
        listen_endpoint(MemoryReactorClock(), "tcp:0", tls=tls)
    assert raised.value.key == "tls_private_key" and "mismatch" in str(raised.value)
