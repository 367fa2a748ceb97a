"""Providers with an injected clock: refresh before expiry (margin, jitter), failures,
the breaker, fail-closed reads, readiness, and the source answer parsers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import Clock
from twisted.python.failure import Failure

from s3relay.config import parse_config
from s3relay.credentials.answers import (
    Fetched,
    SourceError,
    parse_oauth_token,
    parse_sts,
    parse_time,
    parse_vault_creds,
    parse_vault_login,
)
from s3relay.credentials.breaker import State
from s3relay.credentials.provider import VALIDITY_FLOOR, Provider, refresh_delay
from s3relay.credentials.service import CredentialProviders, SourceWorld
from s3relay.credentials.spec import CredentialSet, Refresh
from s3relay.ops.metrics import RelayMetrics
from s3relay.s3.errors import S3Error

T0 = 1_800_000_000.0


class Source:
    """A fetch function whose answers the test gives, one Deferred per call."""

    def __init__(self) -> None:
        self.calls: list[Deferred[Fetched]] = []

    def __call__(self) -> Deferred[Fetched]:
        d: Deferred[Fetched] = Deferred()
        self.calls.append(d)
        return d

    def succeed(self, key: str, expiry: float | None) -> None:
        self.calls[-1].callback(Fetched(CredentialSet("s", key, "secret-" + key, "tok"), expiry))

    def fail(self, message: str = "STS refused with 503 ServiceUnavailable") -> None:
        self.calls[-1].errback(Failure(SourceError(message)))


def make(refresh: Refresh = Refresh(margin=300, jitter=60, retry=5, failure_threshold=3,
                                     open_interval=60, timeout=10),
         rand: float = 0.5) -> tuple[Provider, Source, Clock, RelayMetrics]:
    clock = Clock()
    clock.advance(T0)
    source = Source()
    metrics = RelayMetrics(process_metrics=False)
    provider = Provider("s", source, refresh, clock, metrics, lambda: rand)
    return provider, source, clock, metrics


def sample(metrics: RelayMetrics, metric: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


# -- the schedule ----------------------------------------------------------------------


def test_refresh_delay() -> None:
    r = Refresh(margin=300, jitter=60)
    assert refresh_delay(0, 3600, r, 0.0) == 3300
    assert refresh_delay(0, 3600, r, 0.5) == 3270
    assert refresh_delay(0, 3600, r, 0.999) == pytest.approx(3240.06)
    # Shorter-lived than margin + jitter: half the remaining life.
    assert refresh_delay(0, 200, r, 0.5) == 100
    assert refresh_delay(0, 0.5, r, 0.5) == 1.0
    assert refresh_delay(0, None, r, 0.5) == 900


def test_starts_without_credentials_then_fetches_at_once() -> None:
    provider, source, clock, metrics = make()
    assert provider.current() is None  # not started: nothing, and no fetch either
    assert source.calls == []
    provider.start()
    clock.advance(0)
    assert len(source.calls) == 1
    assert provider.current() is None  # requests do not wait
    assert len(source.calls) == 1  # and do not start a second fetch
    assert provider.check() == (False, "no valid credentials: not fetched yet")
    source.succeed("K1", T0 + 3600)
    assert provider.current() == CredentialSet("s", "K1", "secret-K1", "tok")
    assert provider.check() == (True, "valid for 3600 s")
    assert sample(metrics, "s3relay_credentials_expiry_timestamp_seconds", name="s") == T0 + 3600


def test_refreshes_margin_plus_jitter_before_expiry() -> None:
    provider, source, clock, _ = make(rand=0.25)
    provider.start()
    clock.advance(0)
    source.succeed("K1", T0 + 3600)
    clock.advance(3600 - 300 - 15 - 0.01)
    assert len(source.calls) == 1
    clock.advance(0.02)
    assert len(source.calls) == 2
    # The old ones keep serving while the refresh is out.
    assert provider.current() is not None and provider.current().access_key_id == "K1"  # type: ignore[union-attr]
    source.succeed("K2", clock.seconds() + 3600)
    assert provider.current().access_key_id == "K2"  # type: ignore[union-attr]


def test_jitter_comes_from_the_injected_random() -> None:
    times = []
    for rand in (0.0, 0.9):
        provider, source, clock, _ = make(rand=rand)
        provider.start()
        clock.advance(0)
        source.succeed("K", T0 + 3600)
        (call,) = clock.getDelayedCalls()
        times.append(call.getTime() - T0)
    assert times == [3300, pytest.approx(3246)]


def test_expired_credentials_are_never_returned() -> None:
    provider, source, clock, _ = make(Refresh(margin=300, jitter=0, retry=5, timeout=10))
    provider.start()
    clock.advance(0)
    source.succeed("K1", T0 + 1000)
    clock.advance(700)  # the refresh starts and hangs
    assert len(source.calls) == 2
    clock.advance(1000 - 700 - VALIDITY_FLOOR - 1)
    # The hung fetch timed out (timeout 10 s) and retries keep failing...
    for d in source.calls[1:]:
        if not d.called:
            d.errback(Failure(SourceError("down")))
    assert provider.current() is not None
    clock.advance(1.5)  # now within VALIDITY_FLOOR of expiry
    assert provider.current() is None
    ok, detail = provider.check()
    assert not ok and "no valid credentials" in detail


def test_failure_then_recovery_with_backoff() -> None:
    provider, source, clock, metrics = make(rand=1.0)
    provider.start()
    clock.advance(0)
    source.fail()
    assert provider.check() == (False, "no valid credentials: STS refused with 503 "
                                       "ServiceUnavailable")
    assert sample(metrics, "s3relay_credential_refresh_failures_total", name="s") == 1
    (retry,) = clock.getDelayedCalls()
    assert retry.getTime() - clock.seconds() == 5  # retry × (0.5 + rand/2)
    # A request meanwhile does not jump the queue.
    assert provider.current() is None
    assert len(source.calls) == 1
    clock.advance(5)
    assert len(source.calls) == 2
    source.fail()
    (retry,) = clock.getDelayedCalls()
    assert retry.getTime() - clock.seconds() == 10  # doubled
    clock.advance(10)
    source.succeed("K1", clock.seconds() + 3600)
    assert provider.current() is not None
    assert provider.check()[0]
    assert sample(metrics, "s3relay_credential_refresh_failures_total", name="s") == 2


def test_breaker_opens_and_half_open_probe_recovers() -> None:
    refresh = Refresh(margin=300, jitter=0, retry=1, failure_threshold=3, open_interval=60,
                      timeout=10)
    provider, source, clock, metrics = make(refresh, rand=1.0)
    provider.start()
    clock.advance(0)
    for attempt in range(3):
        if attempt:
            clock.advance(clock.getDelayedCalls()[0].getTime() - clock.seconds())
        source.fail()
    assert provider.breaker.state is State.OPEN
    assert len(source.calls) == 3  # the third failure opened it: no call since
    assert sample(metrics, "s3relay_credential_source_circuit_state", name="s") == 2
    ok, detail = provider.check()
    assert not ok and detail.endswith("source circuit open")
    opened = clock.seconds()
    # Requests while open start nothing.
    for _ in range(5):
        assert provider.current() is None
    clock.advance(59)
    assert len(source.calls) == 3
    clock.advance(opened + 60 - clock.seconds())
    assert len(source.calls) == 4  # the half-open probe
    assert sample(metrics, "s3relay_credential_source_circuit_state", name="s") == 1
    source.fail()  # probe failed: open for another interval
    assert provider.breaker.state is State.OPEN
    clock.advance(60)
    assert len(source.calls) == 5
    source.succeed("K1", clock.seconds() + 3600)
    assert provider.breaker.state is State.CLOSED
    assert sample(metrics, "s3relay_credential_source_circuit_state", name="s") == 0
    assert provider.current() is not None


def test_a_hung_fetch_times_out() -> None:
    provider, source, clock, _ = make(Refresh(timeout=10, retry=5))
    provider.start()
    clock.advance(0)
    clock.advance(10)
    assert source.calls[0].called  # cancelled by the timeout
    assert provider.last_error == "timed out"
    clock.advance(10)
    assert len(source.calls) == 2


def test_stop_cancels_everything() -> None:
    provider, source, clock, _ = make()
    provider.start()
    clock.advance(0)
    provider.stop()
    assert source.calls[0].called
    assert clock.getDelayedCalls() == []
    assert provider.current() is None
    assert clock.getDelayedCalls() == []  # kick does nothing once stopped


def test_credentials_without_expiry_are_checked_again_later() -> None:
    provider, source, clock, _ = make()
    provider.start()
    clock.advance(0)
    source.succeed("K1", None)
    assert provider.check() == (True, "valid")
    clock.advance(900)
    assert len(source.calls) == 2


# -- the registry ----------------------------------------------------------------------


CONFIG = """
[upstream]
url = http://127.0.0.1:9000
region = us-east-1
[credentials:static]
access_key_id = AKSTATIC
secret_access_key = static-secret
[credentials:fetched]
source = chain
[credentials:unused]
source = chain
[client:a]
access_key_id = A
secret_access_key = S
credentials = fetched
[client:b]
access_key_id = B
secret_access_key = S
credentials = static
"""


class Providers(CredentialProviders):
    """Providers whose fetches the test answers."""

    def __init__(self, config: Any, clock: Clock) -> None:
        super().__init__(config, SourceWorld(clock, lambda: None, lambda ca: None))  # type: ignore[arg-type,return-value]
        self.sources: dict[str, Source] = {}

    def _fetch_for(self, spec: Any) -> Any:
        return self.sources.setdefault(spec.name, Source())


def test_registry_fail_closed_readiness_and_reload() -> None:
    clock = Clock()
    clock.advance(T0)
    config = parse_config(CONFIG)
    providers = Providers(config, clock)
    providers.startService()
    clock.advance(0)
    a, b = config.clients["a"], config.clients["b"]
    assert providers.for_client(config, b).access_key_id == "AKSTATIC"
    with pytest.raises(S3Error) as info:
        providers.for_client(config, a)
    assert (info.value.code, info.value.status) == ("ServiceUnavailable", 503)
    assert "fetched" in info.value.reason
    ok, detail = providers.check()
    assert not ok and detail.startswith("fetched: no valid credentials")
    assert "unused" not in detail  # no client uses it
    providers.sources["fetched"].succeed("K1", T0 + 3600)
    assert providers.for_client(config, a).access_key_id == "K1"
    assert providers.check()[0]

    # Reload with the same spec: provider (and its credentials) kept, refreshed at once.
    kept = providers.provider("fetched")
    providers.reconfigure(parse_config(CONFIG))
    assert providers.provider("fetched") is kept
    clock.advance(0)
    assert len(providers.sources["fetched"].calls) == 2
    assert providers.for_client(config, a).access_key_id == "K1"
    # Reload with a changed spec: a new provider, the old one stopped; until
    # the new one's first fetch ends, the old one's last valid credentials serve.
    changed = parse_config(CONFIG.replace("[credentials:fetched]\nsource = chain\n",
                                          "[credentials:fetched]\nsource = chain\nprofile = p\n"))
    providers.sources.clear()
    providers.reconfigure(changed)
    new = providers.provider("fetched")
    assert new is not kept and kept is not None
    clock.advance(0)
    assert kept.current() is None  # stopped: it serves only through its successor
    assert providers.for_client(changed, changed.clients["a"]).access_key_id == "K1"
    ok, detail = providers.check()
    assert ok and "previous config's credentials" in detail
    providers.sources["fetched"].succeed("K2", T0 + 7200)
    assert providers.for_client(changed, changed.clients["a"]).access_key_id == "K2"
    assert new is not None and new.predecessor is None
    # A first fetch that fails ends the hand-over too: fail closed.
    providers.reconfigure(config)
    clock.advance(0)
    assert providers.for_client(config, a).access_key_id == "K2"
    providers.sources["fetched"].fail()
    with pytest.raises(S3Error):
        providers.for_client(config, a)
    assert not providers.check()[0]
    providers.stopService()
    assert clock.getDelayedCalls() == []


# -- parsers ---------------------------------------------------------------------------


STS_OK = b"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleResult><Credentials><AccessKeyId>ASIAEXAMPLE</AccessKeyId>
<SecretAccessKey>sts-secret</SecretAccessKey><SessionToken>sts-token</SessionToken>
<Expiration>2027-01-15T12:00:00Z</Expiration></Credentials></AssumeRoleResult>
</AssumeRoleResponse>"""


def test_parse_sts() -> None:
    got = parse_sts("r", 200, STS_OK)
    assert got.credentials == CredentialSet("r", "ASIAEXAMPLE", "sts-secret", "sts-token")
    assert got.expiry == parse_time("2027-01-15T12:00:00+00:00") == 1800014400.0
    error = (b'<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>'
             b'<Message>not allowed sts-secret</Message></Error></ErrorResponse>')
    with pytest.raises(SourceError) as info:
        parse_sts("r", 403, error)
    assert str(info.value) == "STS refused with 403 AccessDenied"
    with pytest.raises(SourceError, match="malformed XML"):
        parse_sts("r", 200, b"<oops")
    with pytest.raises(SourceError, match="lacks SessionToken"):
        parse_sts("r", 200, STS_OK.replace(b"SessionToken", b"Other"))


def test_parse_vault() -> None:
    body = json.dumps({"lease_duration": 900, "data": {
        "access_key": "AKIAV", "secret_key": "vs", "security_token": None}}).encode()
    assert parse_vault_creds("v", 200, body, 100.0) == Fetched(
        CredentialSet("v", "AKIAV", "vs", None), 1000.0)
    with pytest.raises(SourceError, match="403: permission denied"):
        parse_vault_creds("v", 403, b'{"errors":["permission denied"]}', 0)
    with pytest.raises(SourceError, match="malformed JSON"):
        parse_vault_creds("v", 200, b"{", 0)
    with pytest.raises(SourceError, match="lacks"):
        parse_vault_creds("v", 200, b'{"data":{"access_key":"a"},"lease_duration":1}', 0)
    assert parse_vault_login(200, b'{"auth":{"client_token":"hvs.x"}}') == "hvs.x"
    with pytest.raises(SourceError, match="400: invalid role or secret ID"):
        parse_vault_login(400, b'{"errors":["invalid role or secret ID"]}')


def test_parse_oauth() -> None:
    assert parse_oauth_token(200, b'{"access_token":"jwt","token_type":"Bearer"}') == "jwt"
    with pytest.raises(SourceError, match="401 invalid_client"):
        parse_oauth_token(401, b'{"error":"invalid_client"}')
    with pytest.raises(SourceError, match="no access_token"):
        parse_oauth_token(200, b'{"token_type":"Bearer"}')
