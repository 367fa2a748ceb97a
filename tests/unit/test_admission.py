"""Admission config and decisions (s3relay.access.admission), and multipart = no (policy)."""

from __future__ import annotations

import pytest

from s3relay.access.admission import (
    OPEN_CLIENT,
    AdmissionConfig,
    ClientAdmission,
    Gate,
    check_host,
    host_allowed,
    origin_of,
    parse_admission,
    parse_client_admission,
    peer_address,
)
from s3relay.access.networks import LOOPBACK, parse_address, parse_networks
from s3relay.access.policy import MULTIPART_UPLOADS, authorize, parse_policy
from s3relay.access.ratelimit import WORKER_ENV, WORKERS_ENV, WHOLE, RateLimits, Share
from s3relay.config import ConfigError, parse_config
from s3relay.ini import Section
from s3relay.ops.metrics import RelayMetrics
from s3relay.s3.addressing import Target
from s3relay.s3.errors import S3Error
from s3relay.s3.operations import Operation

BASE = """
[upstream]
url = http://127.0.0.1:9000
region = us-east-1
[credentials:main]
access_key_id = A
secret_access_key = B
[client:c]
access_key_id = C
secret_access_key = D
credentials = main
"""


def section(**items: str) -> Section:
    return Section("server", items, ".")


def test_defaults_are_loopback_any_host_unlimited() -> None:
    config = parse_config(BASE)
    admission = config.server.admission
    assert admission.allowed_networks == LOOPBACK
    assert admission.trusted_proxies.networks == ()
    assert admission.allowed_hostnames is None
    assert admission.multipart and config.clients["c"].policy.multipart_uploads
    assert admission.limits == RateLimits()
    assert config.clients["c"].admission == ClientAdmission()


def test_server_and_client_keys() -> None:
    text = BASE.replace(
        "[upstream]",
        "[server]\nallowed_networks = 10.0.0.0/8\ntrusted_proxies = 127.0.0.1\n"
        "allowed_hostnames = S3.Example:8443\nmultipart = no\nrate = 10\n"
        "max_concurrent_requests = 4\n[upstream]",
    ) + "allowed_networks = 10.1.0.0/16\nrate = 0.5\nburst = 3\n"
    config = parse_config(text)
    admission = config.server.admission
    assert admission.allowed_networks == parse_networks("10.0.0.0/8")
    assert admission.allowed_hostnames == ("s3.example:8443",)
    assert admission.limits == RateLimits(rate=10.0, burst=10.0, max_concurrent=4)
    client = config.clients["c"]
    assert client.admission.allowed_networks == parse_networks("10.1.0.0/16")
    assert client.admission.limits == RateLimits(rate=0.5, burst=3.0)
    assert not client.policy.multipart_uploads  # the [server] default


def test_client_multipart_overrides_server_default() -> None:
    text = BASE.replace("[upstream]", "[server]\nmultipart = no\n[upstream]") + "multipart = yes\n"
    assert parse_config(text).clients["c"].policy.multipart_uploads


@pytest.mark.parametrize(
    "items, key",
    [
        ({"allowed_networks": "10.0.0.1/8"}, "allowed_networks"),
        ({"allowed_networks": ","}, "allowed_networks"),
        ({"trusted_proxies": "proxy.example"}, "trusted_proxies"),
        ({"forwarded_header": "x-real-ip"}, "forwarded_header"),
        ({"allowed_hostnames": "a b"}, "allowed_hostnames"),
        ({"allowed_hostnames": "*.example"}, "allowed_hostnames"),
        ({"allowed_hostnames": ","}, "allowed_hostnames"),
        ({"multipart": "off"}, "multipart"),
        ({"rate": "0"}, "rate"),
        ({"rate": "fast"}, "rate"),
        ({"burst": "5"}, "burst"),
        ({"rate": "1", "burst": "0.5"}, "burst"),
        ({"max_concurrent_requests": "-1"}, "max_concurrent_requests"),
    ],
)
def test_bad_values_name_their_key(items: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_admission(section(**items))
    assert info.value.key == key


def test_client_bad_network() -> None:
    with pytest.raises(ConfigError) as info:
        parse_client_admission(Section("client:c", {"allowed_networks": "x"}, "."))
    assert (info.value.section, info.value.key) == ("client:c", "allowed_networks")


def test_unknown_key_still_refused() -> None:
    with pytest.raises(ConfigError):
        parse_config(BASE.replace("[upstream]", "[server]\nallowed_network = 10.0.0.0/8\n[upstream]"))


@pytest.mark.parametrize(
    "host, allowed",
    [
        ("relay.test", True),
        ("relay.test:8080", True),
        ("RELAY.TEST:9", True),
        ("bucket.relay.test:8080", True),
        ("a.b.relay.test", True),
        (".relay.test", False),
        ("evilrelay.test", False),
        ("127.0.0.1:8080", True),
        ("127.0.0.1:8081", False),
        ("127.0.0.1", False),
        ("[::1]:8080", True),
        ("[::1]", True),
        ("localhost", False),
        ("", False),
    ],
)
def test_host_allowed(host: str, allowed: bool) -> None:
    assert host_allowed(host, ("127.0.0.1:8080", "[::1]"), ("relay.test",)) is allowed


def test_check_host_unset_accepts_anything() -> None:
    check_host(AdmissionConfig(), ("relay.test",), {"host": ["anything"]})
    check_host(AdmissionConfig(), ("relay.test",), {})


def test_check_host_refuses_missing_and_repeated() -> None:
    config = AdmissionConfig(allowed_hostnames=("relay.test",))
    check_host(config, (), {"host": ["relay.test"]})
    for headers in ({}, {"host": ["relay.test", "relay.test"]}, {"host": ["other"]}):
        with pytest.raises(S3Error) as info:
            check_host(config, (), headers)
        assert (info.value.code, info.value.status) == ("InvalidArgument", 400)


class _Peer:
    def __init__(self, host: str) -> None:
        self.host = host


class _Unix:
    name = b"/run/s3relay.sock"


def test_peer_address() -> None:
    assert peer_address(_Peer("::ffff:10.0.0.1")) == parse_address("10.0.0.1")
    assert peer_address(_Unix()) == parse_address("127.0.0.1")
    assert peer_address(object()) is None


def test_origin_record_untrusted_keeps_claims() -> None:
    config = AdmissionConfig(trusted_proxies=parse_networks("10.0.0.1"))
    headers = {"x-forwarded-for": ["10.9.9.9", "10.8.8.8"], "forwarded": ["for=1.2.3.4"]}
    origin, record = origin_of(config, parse_address("127.0.0.1"), headers)
    assert str(origin.address) == "127.0.0.1"
    assert record == {
        "address": "127.0.0.1",
        "forwarded_for": "10.9.9.9, 10.8.8.8",
        "forwarded": "for=1.2.3.4",
        "forwarded_trusted": False,
    }


def test_origin_record_trusted_and_capped() -> None:
    config = AdmissionConfig(trusted_proxies=parse_networks("127.0.0.1"))
    claim = "1.1.1.1, " * 100 + "10.9.9.9"
    origin, record = origin_of(config, parse_address("127.0.0.1"), {"x-forwarded-for": [claim]})
    assert str(origin.address) == "10.9.9.9"
    assert record["forwarded_trusted"] is True and record["address"] == "10.9.9.9"
    assert isinstance(record["forwarded_for"], str) and len(record["forwarded_for"]) < 520


def test_forwarded_header_choice() -> None:
    config = AdmissionConfig(
        trusted_proxies=parse_networks("127.0.0.1"), forwarded_header="forwarded"
    )
    headers = {"x-forwarded-for": ["10.9.9.9"], "forwarded": ['for="[2001:db8::5]:1"']}
    origin, _ = origin_of(config, parse_address("127.0.0.1"), headers)
    assert str(origin.address) == "2001:db8::5"


def _metric(metrics: RelayMetrics, rule: str) -> float:
    value = metrics.registry.get_sample_value("s3relay_admission_refusals_total", {"rule": rule})
    return value or 0.0


def test_gate_counts_refusals_by_rule() -> None:
    metrics = RelayMetrics(process_metrics=False)
    gate = Gate(lambda: 0.0, metrics)
    config = AdmissionConfig(
        allowed_networks=parse_networks("10.0.0.0/8"),
        allowed_hostnames=("relay.test",),
        limits=RateLimits(rate=1.0, burst=1.0),
    )
    outside, _ = origin_of(config, parse_address("127.0.0.1"), {})
    inside, _ = origin_of(config, parse_address("10.0.0.1"), {})
    with pytest.raises(S3Error) as info:
        gate.check_connection(config, (), outside, {"host": ["relay.test"]})
    assert info.value.code == "AccessDenied" and "allowed_networks" in info.value.reason
    with pytest.raises(S3Error):
        gate.check_connection(config, (), inside, {"host": ["evil"]})
    gate.check_connection(config, (), inside, {"host": ["relay.test"]})
    own = ClientAdmission(allowed_networks=parse_networks("10.1.0.0/16"))
    with pytest.raises(S3Error) as info:
        gate.check_client("c", own, inside)
    assert "client c" in info.value.reason
    gate.admit(config, "c", own).release()
    with pytest.raises(S3Error) as info:
        gate.admit(config, "c", own)
    assert info.value.headers == {"Retry-After": "1"}
    assert [_metric(metrics, r) for r in ("network", "host", "client_network", "relay_rate")] == [
        1.0, 1.0, 1.0, 1.0
    ]


def test_workers_gates_enforce_their_share_of_every_limit() -> None:
    """Two workers' gates: each admits its half of the relay's and the client's
    limits, so that together they admit what one relay would."""
    now = [0.0]
    gates = [Gate(lambda: now[0], RelayMetrics(process_metrics=False), Share(i, 2))
             for i in (1, 2)]
    config = AdmissionConfig(limits=RateLimits(max_concurrent=3))
    own = ClientAdmission(limits=RateLimits(rate=2.0, burst=4.0))
    for gate in gates:  # burst 2 each, 1 a second each
        for _ in range(2):
            gate.admit(config, "c", own).release()
        with pytest.raises(S3Error) as info:
            gate.admit(config, "c", own)
        assert "client c" in info.value.reason and info.value.headers == {"Retry-After": "1"}
    now[0] += 1.0
    for gate in gates:
        gate.admit(config, "c", own).release()
        with pytest.raises(S3Error):
            gate.admit(config, "c", own)
    # The relay's 3 concurrent requests: 2 on worker 1, 1 on worker 2.
    held = [gates[0].admit(config, "d", OPEN_CLIENT), gates[0].admit(config, "d", OPEN_CLIENT),
            gates[1].admit(config, "e", OPEN_CLIENT)]
    for gate in gates:
        with pytest.raises(S3Error) as info:
            gate.admit(config, "f", OPEN_CLIENT)
        assert "concurrent requests limit of the relay" in info.value.reason
    assert [gate.in_flight() for gate in gates] == [2, 1]
    for admitted in held:
        admitted.release()
    assert [gate.in_flight() for gate in gates] == [0, 0]


def test_a_gate_takes_the_share_the_supervisor_gave_its_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(WORKER_ENV, raising=False)
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert Gate(lambda: 0.0, RelayMetrics(process_metrics=False)).share is WHOLE
    monkeypatch.setenv(WORKER_ENV, "2")
    monkeypatch.setenv(WORKERS_ENV, "4")
    assert Gate(lambda: 0.0, RelayMetrics(process_metrics=False)).share == Share(2, 4)


@pytest.mark.parametrize("rate", ["0", "-1", "nan"])
def test_a_rate_that_never_refills_is_refused(rate: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[server]\nrate = {rate}\n" + BASE)
    assert (info.value.section, info.value.key) == ("server", "rate")


# -- multipart = no (policy) ------------------------------------------------------

OBJECT = Target("b", b"k", True)


@pytest.mark.parametrize(
    "name", ["CreateMultipartUpload", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload"]
)
def test_multipart_no_refuses_uploads(name: str) -> None:
    policy = parse_policy(multipart="no")
    assert name in MULTIPART_UPLOADS
    with pytest.raises(S3Error) as info:
        authorize(policy, "c", Operation(name, "multipart"), OBJECT, {})
    assert (info.value.code, info.value.status) == ("AccessDenied", 403)
    authorize(parse_policy(multipart="yes"), "c", Operation(name, "multipart"), OBJECT, {})


@pytest.mark.parametrize("name", ["AbortMultipartUpload", "ListParts", "ListMultipartUploads"])
def test_multipart_no_keeps_cleanup(name: str) -> None:
    authorize(parse_policy(multipart="no"), "c", Operation(name, "multipart"), OBJECT, {})


def test_multipart_value_checked() -> None:
    with pytest.raises(Exception) as info:
        parse_policy(multipart="maybe")
    assert getattr(info.value, "key", None) == "multipart"


def test_documented_examples_parse() -> None:
    """Every admission key is documented in the example config with a value that parses."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "etc" / "s3relay" / "s3relay.ini").read_text()
    server_part, _, client_part = text.partition("\n[client:")
    keys = ("allowed_networks", "trusted_proxies", "forwarded_header", "allowed_hostnames",
            "multipart", "rate", "burst", "max_concurrent_requests")

    def examples(part: str) -> dict[str, str]:
        found = {}
        for line in part.splitlines():
            name, equals, value = line.lstrip("; ").partition(" = ")
            if equals and name in keys and name not in found:
                found[name] = value.split("  ")[0].strip()
        return found

    server = examples(server_part)
    assert set(server) == set(keys)
    parse_admission(section(**server))
    client = examples(client_part)
    assert set(client) == set(keys) - {"trusted_proxies", "forwarded_header", "allowed_hostnames"}
    parse_client_admission(Section("client:c", client, "."))
    parse_policy(multipart=client["multipart"])
