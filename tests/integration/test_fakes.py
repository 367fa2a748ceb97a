"""The wire-protocol fakes speak their protocols and fail as told.

Real clients where there is one (botocore's InstanceMetadataFetcher for
IMDS), plain urllib otherwise, so the fakes are checked against the wire,
not against themselves.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from botocore.utils import InstanceMetadataFetcher  # type: ignore[import-untyped]

from tests.fake_http import FakeHTTPServer
from tests.fake_imds import FakeIMDS
from tests.fake_oidc import FakeOIDC
from tests.fake_vault import FakeVault

EXPIRY = datetime.datetime(2099, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """(status, parsed JSON or text) for one request; HTTP errors are returned too."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, data, kind = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, data, kind = error.code, error.read(), error.headers
    if kind.get_content_type() == "application/json":
        return status, json.loads(data)
    return status, data.decode()


def fetcher(imds: FakeIMDS, timeout: float = 5) -> InstanceMetadataFetcher:
    return InstanceMetadataFetcher(timeout=timeout, num_attempts=1, base_url=imds.url + "/",
                                   env={})


# -- IMDS ---------------------------------------------------------------


def test_botocore_fetches_imds_credentials() -> None:
    with FakeIMDS("AKIAIMDS1", "imds-secret-1", "imds-token-1", EXPIRY) as imds:
        creds = fetcher(imds).retrieve_iam_role_credentials()
        assert creds == {
            "role_name": "s3relay-role",
            "access_key": "AKIAIMDS1",
            "secret_key": "imds-secret-1",
            "token": "imds-token-1",
            "expiry_time": "2099-01-01T12:00:00Z",
        }
        put, role, document = imds.requests
        assert (put.method, put.path) == ("PUT", "/latest/api/token")
        assert put.header("x-aws-ec2-metadata-token-ttl-seconds") == "21600"
        assert role.path == "/latest/meta-data/iam/security-credentials/"
        assert document.path == "/latest/meta-data/iam/security-credentials/s3relay-role"
        session = role.header("x-aws-ec2-metadata-token")
        assert session and session.startswith("AQAEAfake-imds-session-")
        assert document.header("x-aws-ec2-metadata-token") == session

        imds.set_credentials("AKIAIMDS2", "imds-secret-2", "imds-token-2", "2099-02-01T00:00:00Z")
        rotated = fetcher(imds).retrieve_iam_role_credentials()
        assert (rotated["access_key"], rotated["expiry_time"]) == ("AKIAIMDS2",
                                                                   "2099-02-01T00:00:00Z")


def test_imds_requires_a_session_token() -> None:
    with FakeIMDS("AKIAIMDS1", "s", "t", EXPIRY) as imds:
        path = imds.url + "/latest/meta-data/iam/security-credentials/"
        assert call(path)[0] == 401
        assert call(path, headers={"X-aws-ec2-metadata-token": "forged"})[0] == 401
        assert call(imds.url + "/latest/api/token", "PUT")[0] == 400  # no TTL header
        status, token = call(imds.url + "/latest/api/token", "PUT",
                             headers={"X-aws-ec2-metadata-token-ttl-seconds": "30"})
        assert status == 200
        assert call(path, headers={"X-aws-ec2-metadata-token": token}) == (200, "s3relay-role")
        imds.revoke_session_tokens()
        assert call(path, headers={"X-aws-ec2-metadata-token": token})[0] == 401


@pytest.mark.parametrize("kind", ["401", "500", "503", "malformed", "reset"])
def test_botocore_gets_nothing_while_imds_fails(kind: str) -> None:
    with FakeIMDS("AKIAIMDS1", "s", "t", EXPIRY) as imds:
        imds.fail_next(kind, path="/latest/meta-data/iam/security-credentials/s3relay-role")
        assert fetcher(imds).retrieve_iam_role_credentials() == {}
        assert imds.requests[-1].failure == kind
        # The failure was used up: the next fetch succeeds.
        assert fetcher(imds).retrieve_iam_role_credentials()["access_key"] == "AKIAIMDS1"


def test_botocore_times_out_on_a_stalled_imds() -> None:
    with FakeIMDS("AKIAIMDS1", "s", "t", EXPIRY) as imds:
        imds.fail_next("timeout")
        started = time.monotonic()
        # A stalled token PUT: botocore falls back to IMDSv1, which this fake refuses.
        assert fetcher(imds, timeout=0.5).retrieve_iam_role_credentials() == {}
        assert time.monotonic() - started < 30
        assert imds.requests[0].failure == "timeout"


# -- Vault --------------------------------------------------------------


def test_vault_approle_login_then_creds_and_sts() -> None:
    with FakeVault(role_id="rid", secret_id="sid", access_key="AKIAVAULT1",
                   secret_key="vs1", security_token="vst1", lease_duration=900) as vault:
        status, login = call(vault.url + "/v1/auth/approle/login", "POST",
                             json.dumps({"role_id": "rid", "secret_id": "sid"}).encode())
        assert status == 200
        auth = login["auth"]
        assert auth["renewable"] is True and auth["lease_duration"] > 0
        assert "default" in auth["policies"]
        token = auth["client_token"]
        assert vault.issued_tokens == [token]

        status, creds = call(vault.url + "/v1/aws/creds/s3relay",
                             headers={"X-Vault-Token": token})
        assert status == 200
        assert creds["data"] == {"access_key": "AKIAVAULT1", "secret_key": "vs1",
                                 "security_token": None}
        assert creds["lease_id"].startswith("aws/creds/s3relay/")
        assert (creds["renewable"], creds["lease_duration"]) == (True, 900)
        assert creds["request_id"]

        status, sts = call(vault.url + "/v1/aws/sts/s3relay", "POST", b"{}",
                           headers={"Authorization": f"Bearer {token}"})
        assert status == 200
        assert sts["data"]["security_token"] == "vst1"
        assert sts["renewable"] is False

        status, renewed = call(vault.url + "/v1/sys/leases/renew", "PUT",
                               json.dumps({"lease_id": creds["lease_id"]}).encode(),
                               headers={"X-Vault-Token": token})
        assert (status, renewed["lease_duration"]) == (200, 900)

        vault.set_credentials("AKIAVAULT2", "vs2", lease_duration=60)
        status, creds = call(vault.url + "/v1/aws/creds/s3relay",
                             headers={"X-Vault-Token": token})
        assert (creds["data"]["access_key"], creds["lease_duration"]) == ("AKIAVAULT2", 60)


def test_vault_refuses_bad_logins_tokens_and_paths() -> None:
    with FakeVault(token="root", role_id="rid", secret_id="sid", mount="aws-prod") as vault:
        login = vault.url + "/v1/auth/approle/login"
        assert call(login, "POST", b'{"role_id": "rid", "secret_id": "nope"}') == (
            400, {"errors": ["invalid role or secret ID"]})
        assert call(login, "POST", b"not json")[0] == 400
        creds = vault.url + "/v1/aws-prod/creds/s3relay"
        assert call(creds) == (403, {"errors": ["permission denied"]})
        assert call(creds, headers={"X-Vault-Token": "wrong"})[0] == 403
        assert call(creds, headers={"X-Vault-Token": "root"})[0] == 200
        assert call(vault.url + "/v1/aws/creds/s3relay",
                    headers={"X-Vault-Token": "root"}) == (404, {"errors": []})
        assert call(vault.url + "/v1/aws-prod/creds/other",
                    headers={"X-Vault-Token": "root"}) == (404, {"errors": []})
        vault.revoke_tokens()
        assert call(creds, headers={"X-Vault-Token": "root"})[0] == 403
        assert vault.requests[-1].header("X-Vault-Token") == "root"


@pytest.mark.parametrize("kind, status", [("401", 401), ("403", 403), ("500", 500),
                                          ("503", 503)])
def test_vault_injected_errors(kind: str, status: int) -> None:
    with FakeVault(token="root") as vault:
        vault.fail_next(kind, times=2)
        url = vault.url + "/v1/aws/creds/s3relay"
        for _ in range(2):
            got, document = call(url, headers={"X-Vault-Token": "root"})
            assert got == status and document["errors"]
        assert call(url, headers={"X-Vault-Token": "root"})[0] == 200


# -- OIDC ---------------------------------------------------------------


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(client_id: str, secret: str) -> dict[str, str]:
    pair = f"{client_id}:{secret}".encode()
    return {**FORM, "Authorization": "Basic " + base64.b64encode(pair).decode()}


def test_oidc_client_credentials_basic_and_post() -> None:
    with FakeOIDC("relay", "s3cret:/+", token="tok-1", expires_in=600) as oidc:
        status, grant = call(oidc.token_url, "POST",
                             form(grant_type="client_credentials", scope="s3 sts"),
                             basic("relay", "s3cret%3A%2F%2B"))
        assert status == 200
        assert grant == {"access_token": "tok-1", "token_type": "Bearer", "expires_in": 600,
                         "scope": "s3 sts"}
        oidc.set_token("tok-2", 60)
        status, grant = call(oidc.token_url, "POST",
                             form(grant_type="client_credentials", client_id="relay",
                                  client_secret="s3cret:/+"), FORM)
        assert (status, grant["access_token"], grant["expires_in"]) == (200, "tok-2", 60)
        assert "scope" not in grant
        assert oidc.scopes == ["s3 sts", None]
        assert oidc.auth_methods == ["basic", "post"]
        assert oidc.requests[0].header("Cache-Control") is None  # recorded as sent


def test_oidc_refusals() -> None:
    with FakeOIDC("relay", "secret", scopes=["s3"]) as oidc:
        url = oidc.token_url
        grant = form(grant_type="client_credentials")
        assert call(url, "POST", grant, basic("relay", "wrong")) == (
            401, {"error": "invalid_client"})
        assert call(url, "POST", form(grant_type="client_credentials", client_id="relay",
                                      client_secret="wrong"), FORM)[0] == 401
        assert call(url, "POST", grant, FORM) == (401, {"error": "invalid_client"})
        assert call(url, "POST", form(grant_type="password"), basic("relay", "secret")) == (
            400, {"error": "unsupported_grant_type"})
        assert call(url, "POST", form(grant_type="client_credentials", scope="admin"),
                    basic("relay", "secret")) == (400, {"error": "invalid_scope"})
        assert call(url, "POST", form(grant_type="client_credentials", client_secret="secret"),
                    basic("relay", "secret")) == (400, {"error": "invalid_request"})
        assert call(url, "POST", b'{"grant_type": "client_credentials"}',
                    {"Content-Type": "application/json", **basic("relay", "secret")})[0] == 400
        assert call(url, "GET")[0] == 405
        assert call(oidc.url + "/other", "POST", grant, basic("relay", "secret"))[0] == 404


# -- failure kinds common to every fake --------------------------------


def make_fakes() -> list[Callable[[], FakeHTTPServer]]:
    return [
        lambda: FakeIMDS("a", "s", "t", EXPIRY),
        lambda: FakeVault(token="root"),
        lambda: FakeOIDC("relay", "secret"),
    ]


def probe(fake: FakeHTTPServer) -> tuple[str, str, bytes, dict[str, str]]:
    """One request each fake answers 200: method, path, body, headers."""
    if isinstance(fake, FakeIMDS):
        return "PUT", "/latest/api/token", b"", {"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    if isinstance(fake, FakeVault):
        return "GET", "/v1/aws/creds/s3relay", b"", {"X-Vault-Token": "root"}
    return "POST", "/token", form(grant_type="client_credentials"), basic("relay", "secret")


def raw(fake: FakeHTTPServer, timeout: float = 10) -> tuple[http.client.HTTPConnection, Any]:
    method, path, body, headers = probe(fake)
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    connection.request(method, path, body, headers)
    return connection, connection.getresponse


@pytest.mark.parametrize("make", make_fakes(), ids=["imds", "vault", "oidc"])
def test_failure_kinds(make: Callable[[], FakeHTTPServer]) -> None:
    with make() as fake:
        for kind in ("401", "403", "500", "503"):
            fake.fail_next(kind)
            connection, respond = raw(fake)
            response = respond()
            assert response.status == int(kind)
            response.read()
            connection.close()

        fake.fail_next("malformed")
        connection, respond = raw(fake)
        response = respond()
        assert response.status == 200
        with pytest.raises(ValueError):
            json.loads(response.read())
        connection.close()

        fake.fail_next("reset")
        connection, respond = raw(fake)
        with pytest.raises(ConnectionResetError):
            respond()
        connection.close()

        fake.fail_next("timeout")
        connection, respond = raw(fake, timeout=0.5)
        with pytest.raises(socket.timeout):
            respond()
        connection.close()

        # Keep-alive: two requests on one connection, then all is well again.
        connection, respond = raw(fake)
        assert respond().read() is not None
        method, path, body, headers = probe(fake)
        connection.request(method, path, body, headers)
        assert connection.getresponse().status == 200
        connection.close()
        assert [r.failure for r in fake.requests] == [
            "401", "403", "500", "503", "malformed", "reset", "timeout", None, None]


@pytest.mark.parametrize("make", make_fakes(), ids=["imds", "vault", "oidc"])
def test_shutdown_is_prompt_with_stalled_and_idle_connections(
    make: Callable[[], FakeHTTPServer],
) -> None:
    fake = make()
    fake.start()
    fake.fail_next("timeout", times=3)
    stalled = [raw(fake, timeout=30)[0] for _ in range(3)]
    idle = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=30)
    idle.connect()
    deadline = time.monotonic() + 10
    while len(fake.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    port = fake.port
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 10  # generous: a hang would take STALL_SECONDS
    for connection in stalled:
        # The stalled requests end with the connection closed, never an answer.
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            connection.getresponse()
        connection.close()
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_unknown_failure_kind_is_refused() -> None:
    with FakeOIDC("a", "b") as oidc:
        with pytest.raises(ValueError):
            oidc.fail_next("418")
