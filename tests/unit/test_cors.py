"""Tests for CORS preflights (s3relay.access.cors) through the in-memory relay."""

from __future__ import annotations

import pytest

from s3relay.access.cors import check_preflight
from s3relay.config import ConfigError, parse_config
from s3relay.s3.errors import S3Error
from tests.unit.memory import UPSTREAM_KEY, Client, Relay, config_text

ORIGIN = "https://app.example.com"
PREFLIGHT = (
    "OPTIONS /b/photo.jpg?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc HTTP/1.1\r\n"
    "Host: {host}\r\nOrigin: " + ORIGIN + "\r\nAccess-Control-Request-Method: PUT\r\n"
    "Access-Control-Request-Headers: content-type\r\n\r\n"
)
ANSWER = (b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: " + ORIGIN.encode() +
          b"\r\nAccess-Control-Allow-Methods: PUT\r\nContent-Length: 0\r\n\r\n")


def preflight(relay: Relay, text: str = PREFLIGHT) -> Client:
    client = relay.connect()
    client.send(text.format(host="relay.test").encode())
    return client


@pytest.mark.parametrize("headers, message", [
    ({"access-control-request-method": ["PUT"]}, "Origin request header needed"),
    ({"origin": [ORIGIN]}, "Access-Control-Request-Method"),
])
def test_a_malformed_preflight_gets_s3s_400(headers: dict[str, list[str]], message: str) -> None:
    with pytest.raises(S3Error) as info:
        check_preflight(headers, 0)
    assert (info.value.code, info.value.status) == ("BadRequest", 400)
    assert message in info.value.message


def test_an_unsigned_preflight_is_asked_of_the_upstream_signed_and_answered_as_is() -> None:
    relay = Relay(config_text(server="preflight_credentials = main"))
    client = preflight(relay)
    (call,) = relay.upstream.calls
    sent = call.request
    # Signed with the credential set, no presigned parameters, the CORS headers kept.
    assert sent.start_line == "OPTIONS /b/photo.jpg HTTP/1.1"
    assert f"Credential={UPSTREAM_KEY}/" in (sent.header("authorization") or "")
    assert sent.header("origin") == ORIGIN and sent.header("access-control-request-method") == "PUT"
    call.respond(ANSWER)
    (response,) = client.responses()
    assert response.status == 200
    assert response.header("access-control-allow-origin") == ORIGIN
    assert response.header("access-control-allow-methods") == "PUT"


def test_without_a_credential_set_for_preflights_they_are_refused() -> None:
    relay = Relay()
    client = preflight(relay)
    (response,) = client.responses()
    assert response.status == 403 and b"CORSResponse" in response.body
    assert relay.upstream.calls == []


def test_a_malformed_preflight_never_reaches_the_upstream() -> None:
    relay = Relay(config_text(server="preflight_credentials = main"))
    client = preflight(relay, PREFLIGHT.replace("Origin: " + ORIGIN + "\r\n", ""))
    (response,) = client.responses()
    assert response.status == 400 and b"<Code>BadRequest</Code>" in response.body
    assert relay.upstream.calls == []


def test_preflights_are_signed_with_anonymous_credentials_by_default() -> None:
    config = parse_config(config_text(client="\n[anonymous]\nbuckets = pub\ncredentials = main\n"))
    assert config.preflight is not None and config.preflight.credentials == "main"
    assert parse_config(config_text()).preflight is None


def test_preflight_credentials_must_name_a_set() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config_text(server="preflight_credentials = nope"))
    assert "preflight_credentials" in str(info.value)


def test_errors_the_relay_writes_to_a_page_are_readable_by_it() -> None:
    relay = Relay()
    client = relay.connect()
    client.send(relay.sign("GET", "/b/k", {"Origin": ORIGIN}, secret="wrong"))
    (response,) = client.responses()
    assert response.status == 403
    assert response.header("access-control-allow-origin") == ORIGIN
    assert response.header("vary") == "Origin"
    plain = relay.connect()
    plain.send(relay.sign("GET", "/b/k", secret="wrong"))
    assert plain.responses()[0].header("access-control-allow-origin") is None
