"""Upstream credentials end to end: a real relay re-signs real S3 requests with
credentials fetched from STS (moto), Vault, an OAuth2 token endpoint and IMDS.

The S3 side is moto with IAM enforcement (``tests.moto_sts``: the same server
as the other end-to-end tests, plus unsigned AssumeRoleWithWebIdentity as on
AWS, accepting only listed tokens).  moto checks temporary credentials fully:
an ``ASIA`` key is looked up among the roles it assumed and the request's
``X-Amz-Security-Token`` must be that session's token.  The key the relay
starts from (``assumer``) may only call sts:AssumeRole, so a request that
reaches S3 successfully was signed with the assumed role's credentials.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from s3relay import cli
from tests import harness
from tests.fake_imds import FakeIMDS
from tests.fake_oidc import FakeOIDC
from tests.fake_vault import FakeVault
from tests.integration.conftest import CLIENT_KEY, HOSTNAME, boto_client

ALLOW_ALL = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
             '"Action":"*","Resource":"*"}]}')
ONLY_ASSUME = ('{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
               '"Action":"sts:AssumeRole","Resource":"*"}]}')
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Effect": "Allow", "Principal": {"AWS": "*"},
    "Action": ["sts:AssumeRole", "sts:AssumeRoleWithWebIdentity"]}]})
WAIT = 60.0


@pytest.fixture(scope="module")
def tokens(workdir: Path) -> Path:
    """The web identity tokens moto accepts, one a line."""
    path = workdir / "accepted-tokens"
    path.write_text("good-token\n")
    return path


@pytest.fixture(scope="module")
def sts(workdir: Path, tokens: Path) -> Iterator[harness.S3Server]:
    server = harness.start_s3(workdir, "tests.moto_sts",
                              {"MOTO_WEB_IDENTITY_TOKENS": str(tokens)})
    yield server
    harness.stop(server.process)


@pytest.fixture(scope="module")
def role_arn(sts: harness.S3Server) -> str:
    iam: Any = sts.client("iam")
    role = iam.create_role(RoleName="relay-role", AssumeRolePolicyDocument=TRUST)["Role"]
    iam.put_role_policy(RoleName="relay-role", PolicyName="all", PolicyDocument=ALLOW_ALL)
    return str(role["Arn"])


@pytest.fixture(scope="module")
def assumer(sts: harness.S3Server) -> tuple[str, str]:
    """An IAM key that may assume the role and do nothing else."""
    iam: Any = sts.client("iam")
    iam.create_user(UserName="assumer")
    iam.put_user_policy(UserName="assumer", PolicyName="assume", PolicyDocument=ONLY_ASSUME)
    key = iam.create_access_key(UserName="assumer")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="module")
def admin(sts: harness.S3Server) -> Any:
    return sts.client()


_buckets = iter(range(10_000))


@pytest.fixture
def bucket(admin: Any) -> str:
    name = f"creds-{next(_buckets)}"
    admin.create_bucket(Bucket=name)
    return name


_users = iter(range(10_000))


def user_key(sts: harness.S3Server) -> tuple[str, str]:
    """A new IAM user allowed everything, and its key (as Vault's creds path hands out)."""
    iam: Any = sts.client("iam")
    name = f"vault-user-{next(_users)}"
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="all", PolicyDocument=ALLOW_ALL)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def temporary(sts: harness.S3Server, role_arn: str) -> dict[str, Any]:
    """Session credentials for the role, fetched directly (to hand to a fake source)."""
    client: Any = sts.client("sts")
    creds: dict[str, Any] = client.assume_role(
        RoleArn=role_arn, RoleSessionName="fake-source", DurationSeconds=900
    )["Credentials"]
    return creds


def relay_text(s3: harness.S3Server, port: int, metrics_port: int, credentials: str) -> str:
    return f"""
[server]
listen = tcp:{port}:interface=127.0.0.1
hostnames = {HOSTNAME}
region = us-east-1

[upstream]
url = {s3.url}
region = us-east-1

{credentials}

[client:alice]
access_key_id = {CLIENT_KEY[0]}
secret_access_key = {CLIENT_KEY[1]}
credentials = up

[metrics]
listen = tcp:{metrics_port}:interface=127.0.0.1
"""


class CredRelay:
    def __init__(self, relay: harness.Relay, metrics_port: int) -> None:
        self.relay = relay
        self.metrics_url = f"http://127.0.0.1:{metrics_port}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.metrics_url + path, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def readiness(self) -> tuple[int, dict[str, Any]]:
        status, body = self.get("/readyz")
        return status, json.loads(body)

    def wait_ready(self, want: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            status, report = self.readiness()
            if (status == 200) == want:
                return report
            if time.monotonic() > deadline:
                raise AssertionError(f"readiness stayed {status}: {report}\n"
                                     f"{self.relay.output()[-4000:]}")
            time.sleep(0.2)


@pytest.fixture
def start(workdir: Path, sts: harness.S3Server) -> Iterator[Callable[..., CredRelay]]:
    started: list[harness.Relay] = []

    def run(credentials: str, env: dict[str, str] | None = None) -> CredRelay:
        port, metrics_port = harness.free_port(), harness.free_port()
        relay = harness.start_relay(
            workdir, relay_text(sts, port, metrics_port, credentials), port, env=env
        )
        started.append(relay)
        harness.wait_for_port(metrics_port, relay.process, relay.log)
        return CredRelay(relay, metrics_port)

    yield run
    for relay in started:
        harness.stop(relay.process)


def round_trip(relay: CredRelay, bucket: str, admin: Any, key: str = "obj") -> None:
    client = boto_client(relay.relay.url)
    client.put_object(Bucket=bucket, Key=key, Body=b"signed with fetched credentials")
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == \
        b"signed with fetched credentials"
    assert admin.get_object(Bucket=bucket, Key=key)["Body"].read() == \
        b"signed with fetched credentials"


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def no_secrets_in(relay: CredRelay, *secrets: str) -> None:
    output = relay.relay.output() + relay.get("/metrics")[1].decode() + \
        json.dumps(relay.readiness()[1])
    for secret in secrets:
        assert secret not in output


# -- STS ---------------------------------------------------------------------------------


def test_the_assumer_alone_cannot_use_s3(sts: harness.S3Server, assumer: tuple[str, str],
                                         bucket: str) -> None:
    """Without this the tests below would prove nothing about which key signed."""
    alone = boto3.client("s3", endpoint_url=sts.url, region_name="us-east-1",
                         aws_access_key_id=assumer[0], aws_secret_access_key=assumer[1],
                         config=BotoConfig(s3={"addressing_style": "path"},
                                           retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as info:
        alone.put_object(Bucket=bucket, Key="x", Body=b"x")
    assert info.value.response["Error"]["Code"] == "AccessDenied"


def test_assume_role_resigns_with_session_credentials(
    start: Callable[..., CredRelay], sts: harness.S3Server, role_arn: str,
    assumer: tuple[str, str], admin: Any, bucket: str,
) -> None:
    relay = start(f"""
[credentials:base]
access_key_id = {assumer[0]}
secret_access_key = {assumer[1]}

[credentials:up]
source = assume-role
source_credentials = base
role_arn = {role_arn}
session_name = relay-e2e
duration = 900
sts_url = {sts.url}
external_id = ext-123
""")
    report = relay.wait_ready()
    assert report["checks"]["credentials"]["detail"].startswith("up: valid for")
    round_trip(relay, bucket, admin)
    # The relay's upstream key is a session key from STS, not the assumer's.
    assert '"fetched ASIA' in relay.relay.output() or "fetched ASIA" in relay.relay.output()
    metrics = relay.get("/metrics")[1].decode()
    expiry = [line for line in metrics.splitlines()
              if line.startswith('s3relay_credentials_expiry_timestamp_seconds{name="up"}')]
    assert expiry and float(expiry[0].split()[-1]) > time.time() + 600
    no_secrets_in(relay, assumer[1])


def test_web_identity_token_file(
    start: Callable[..., CredRelay], sts: harness.S3Server, role_arn: str, admin: Any,
    bucket: str, tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text("good-token\n")
    relay = start(f"""
[credentials:up]
source = web-identity
role_arn = {role_arn}
token_file = {token}
sts_url = {sts.url}
""")
    relay.wait_ready()
    round_trip(relay, bucket, admin)
    no_secrets_in(relay, "good-token")


def test_fail_closed_while_the_source_refuses_then_recovers(
    start: Callable[..., CredRelay], sts: harness.S3Server, role_arn: str, admin: Any,
    bucket: str, tmp_path: Path, tokens: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text("later-token\n")  # not (yet) accepted by STS
    relay = start(f"""
[credentials:up]
source = web-identity
role_arn = {role_arn}
token_file = {token}
sts_url = {sts.url}
retry_interval = 0.5
failure_threshold = 2
open_interval = 2
""")
    # Starts anyway, not ready, and refuses instead of forwarding.  Waited for, not
    # slept on (a busy machine's STS calls can outlast a fixed sleep): STS said no
    # often enough to open the source circuit (failure_threshold = 2).
    refusal = "STS refused with 400 InvalidIdentityToken"

    def circuit_opened() -> bool:
        detail = relay.readiness()[1]["checks"]["credentials"]["detail"]
        return refusal in detail and "source circuit" in detail

    assert harness.eventually(circuit_opened, WAIT), relay.readiness()
    status, report = relay.readiness()
    assert status == 503
    assert not report["checks"]["credentials"]["ok"]
    assert refusal in report["checks"]["credentials"]["detail"]
    client = boto_client(relay.relay.url)
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key="refused", Body=b"never stored")
    assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "Contents" not in admin.list_objects_v2(Bucket=bucket)
    records = [r["access"] for r in relay.relay.records()
               if r.get("access", {}).get("key") == "refused"]
    assert {r["status"] for r in records} == {503}
    assert {r["upstream_status"] for r in records} == {None}  # nothing went upstream
    assert records, relay.relay.output()[-3000:]
    # The source recovers: so does the relay, by itself.
    with tokens.open("a") as handle:
        handle.write("later-token\n")
    relay.wait_ready()
    round_trip(relay, bucket, admin, "after-recovery")
    metrics = relay.get("/metrics")[1].decode()
    failures = [line for line in metrics.splitlines()
                if line.startswith('s3relay_credential_refresh_failures_total{name="up"}')]
    assert failures and float(failures[0].split()[-1]) >= 2
    assert "source circuit" in relay.relay.output()  # breaker transitions logged


# -- Vault -----------------------------------------------------------------------------------


def test_vault_approle_sts_path(
    start: Callable[..., CredRelay], sts: harness.S3Server, role_arn: str, admin: Any,
    bucket: str, tmp_path: Path,
) -> None:
    creds = temporary(sts, role_arn)
    with FakeVault(role_id="relay-role-id", secret_id="relay-secret-id") as vault:
        vault.set_credentials(creds["AccessKeyId"], creds["SecretAccessKey"],
                              creds["SessionToken"], 900)
        vault.fail_next("503", times=1)  # Vault starts sealed: the relay retries
        secret_id = secret_file(tmp_path / "secret-id", "relay-secret-id\n")
        relay = start(f"""
[credentials:up]
source = vault
vault_url = {vault.url}
path = aws/sts/s3relay
role_id = relay-role-id
secret_id_file = {secret_id}
retry_interval = 0.5
""")
        relay.wait_ready()
        round_trip(relay, bucket, admin)
        paths = [r.path for r in vault.requests]
        assert "/v1/auth/approle/login" in paths and "/v1/aws/sts/s3relay" in paths
        reads = [r for r in vault.requests if r.path == "/v1/aws/sts/s3relay"]
        assert reads[-1].header("X-Vault-Token") in vault.issued_tokens
        no_secrets_in(relay, "relay-secret-id", creds["SecretAccessKey"],
                      creds["SessionToken"], *vault.issued_tokens)


def test_vault_token_creds_path(
    start: Callable[..., CredRelay], sts: harness.S3Server, admin: Any, bucket: str,
    tmp_path: Path,
) -> None:
    key, secret = user_key(sts)
    with FakeVault(token="hvs.relay-token") as vault:
        vault.set_credentials(key, secret, "", 900)
        token = secret_file(tmp_path / "vault-token", "hvs.relay-token\n")
        relay = start(f"""
[credentials:up]
source = vault
vault_url = {vault.url}
path = aws/creds/s3relay
token_file = {token}
""")
        relay.wait_ready()
        round_trip(relay, bucket, admin)
        no_secrets_in(relay, "hvs.relay-token", secret)


# -- OIDC ------------------------------------------------------------------------------------


def test_oidc_client_credentials_then_web_identity(
    start: Callable[..., CredRelay], sts: harness.S3Server, role_arn: str, admin: Any,
    bucket: str, tmp_path: Path, tokens: Path,
) -> None:
    with tokens.open("a") as handle:
        handle.write("oidc-access-token-1\n")
    with FakeOIDC("relay-client", "relay/client+secret", token="oidc-access-token-1") as idp:
        client_secret = secret_file(tmp_path / "client-secret", "relay/client+secret\n")
        relay = start(f"""
[credentials:up]
source = oidc
token_url = {idp.token_url}
client_id = relay-client
client_secret_file = {client_secret}
scope = s3relay
role_arn = {role_arn}
sts_url = {sts.url}
""")
        relay.wait_ready()
        round_trip(relay, bucket, admin)
        assert idp.auth_methods[0] == "basic"
        assert idp.scopes[0] == "s3relay"
        no_secrets_in(relay, "relay/client+secret", "oidc-access-token-1")


# -- botocore's chain (IMDSv2) -------------------------------------------------------------------


def test_chain_from_instance_metadata(
    start: Callable[..., CredRelay], sts: harness.S3Server, role_arn: str, admin: Any,
    bucket: str, tmp_path: Path,
) -> None:
    creds = temporary(sts, role_arn)
    expiration = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=14)
    with FakeIMDS(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"],
                  expiration) as imds:
        env = {k: v for k, v in harness.relay_env().items() if not k.startswith("AWS_")}
        env.update(
            AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url + "/",
            AWS_CONFIG_FILE=str(tmp_path / "no-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        )
        relay = start("[credentials:up]\nsource = chain\n", env=env)
        report = relay.wait_ready()
        assert report["checks"]["credentials"]["detail"].startswith("up: valid for")
        round_trip(relay, bucket, admin)
        assert any(r.method == "PUT" and r.path == "/latest/api/token" for r in imds.requests)
        no_secrets_in(relay, creds["SecretAccessKey"], creds["SessionToken"])


# -- --check-config ----------------------------------------------------------------------------


def test_check_config_offline_and_silent_about_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_file(tmp_path / "cs", "oidc-client-secret-value\n")
    secret_file(tmp_path / "vt", "hvs.vault-token-value\n")
    (tmp_path / "jwt").write_text("jwt-value")
    ini = tmp_path / "s3relay.ini"
    role = "arn:aws:iam::123456789012:role/r"
    ini.write_text(f"""
[upstream]
url = https://s3.example.invalid
region = us-east-1
[credentials:base]
access_key_id = AKIABASE
secret_access_key = static-secret-value
[credentials:role]
source = assume-role
source_credentials = base
role_arn = {role}
sts_url = https://sts.example.invalid
[credentials:web]
source = web-identity
role_arn = {role}
token_file = jwt
[credentials:o]
source = oidc
token_url = https://idp.example.invalid/token
client_id = c
client_secret_file = cs
role_arn = {role}
[credentials:v]
source = vault
vault_url = https://vault.example.invalid
path = aws/creds/r
token_file = vt
[credentials:c]
source = chain
[client:a]
access_key_id = A
secret_access_key = client-secret-value
credentials = role
""")
    assert cli.main(["--check-config", str(ini)]) == 0
    out, err = capsys.readouterr()
    assert "6 credential sets" in out
    for secret in ("oidc-client-secret-value", "hvs.vault-token-value", "jwt-value",
                   "static-secret-value", "client-secret-value"):
        assert secret not in out + err
    (tmp_path / "cs").chmod(0o644)
    assert cli.main(["--check-config", str(ini)]) == 1
    out, err = capsys.readouterr()
    assert "chmod 600" in err and "oidc-client-secret-value" not in out + err
    assert os.path.exists(ini)


# -- SIGHUP --------------------------------------------------------------------------------------


def test_reload_rebuilds_a_changed_credential_set(
    start: Callable[..., CredRelay], sts: harness.S3Server, role_arn: str,
    assumer: tuple[str, str], admin: Any, bucket: str, tmp_path: Path,
) -> None:
    bad = tmp_path / "bad-token"
    bad.write_text("refused-token\n")
    web = f"""
[credentials:up]
source = web-identity
role_arn = {role_arn}
token_file = {bad}
sts_url = {sts.url}
retry_interval = 0.5
"""
    relay = start(web)
    time.sleep(1.0)
    assert relay.readiness()[0] == 503
    # The operator switches the set to assume-role from a static key in a file.
    secret = secret_file(tmp_path / "assumer-secret", assumer[1] + "\n")
    config = relay.relay.log.parent / f"relay-{relay.relay.port}.ini"
    text = config.read_text().replace(web, f"""
[credentials:base]
access_key_id = {assumer[0]}
secret_access_key_file = {secret}

[credentials:up]
source = assume-role
source_credentials = base
role_arn = {role_arn}
sts_url = {sts.url}
""")
    assert "assume-role" in text
    config.write_text(text)
    relay.relay.process.send_signal(signal.SIGHUP)
    relay.wait_ready()
    round_trip(relay, bucket, admin, "after-reload")
    output = relay.relay.output()
    assert "reloaded" in output
    # The old provider stopped: no refresh failure is logged after the reload.
    after = output[output.index("reloaded"):]
    assert "refresh failed" not in after

    # A secret file readable by others is refused at reload; the running config stays.
    secret.chmod(0o644)
    config.write_text(text.replace("sts_url", "duration = 1000\nsts_url"))
    relay.relay.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while "reload refused" not in relay.relay.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "chmod 600" in relay.relay.output()
    assert assumer[1] not in relay.relay.output()
    round_trip(relay, bucket, admin, "still-served")


# -- failure modes of the remote sources ----------------------------------------------------------


def metric(relay: CredRelay, prefix: str) -> float:
    lines = [line for line in relay.get("/metrics")[1].decode().splitlines()
             if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_vault_every_failure_kind_then_recovery(
    start: Callable[..., CredRelay], sts: harness.S3Server, admin: Any, bucket: str,
    tmp_path: Path,
) -> None:
    key, secret = user_key(sts)
    kinds = ["401", "403", "500", "503", "malformed", "reset", "timeout"]
    with FakeVault(token="hvs.t") as vault:
        vault.set_credentials(key, secret, "", 900)
        for kind in kinds:
            vault.fail_next(kind)
        token = secret_file(tmp_path / "vault-token", "hvs.t\n")
        relay = start(f"""
[credentials:up]
source = vault
vault_url = {vault.url}
path = aws/creds/s3relay
token_file = {token}
retry_interval = 0.2
failure_threshold = 3
open_interval = 1
timeout = 2
""")
        client = boto_client(relay.relay.url)
        with pytest.raises(ClientError) as info:
            client.put_object(Bucket=bucket, Key="early", Body=b"x")
        assert info.value.response["Error"]["Code"] == "ServiceUnavailable"
        relay.wait_ready()
        round_trip(relay, bucket, admin)
        output = relay.relay.output()
        for said in ("Vault refused with 401", "Vault refused with 403: permission denied",
                     "Vault refused with 500", "Vault refused with 503: Vault is sealed",
                     "malformed JSON", "timed out", "no answer (",
                     "source circuit closed -> open",
                     "source circuit open -> half_open", "source circuit half_open -> closed"):
            assert said in output, (said, [line for line in output.splitlines()
                                           if "credentials up" in line])
        assert metric(relay, 's3relay_credential_refresh_failures_total{name="up"}') == 7
        assert metric(relay, 's3relay_credential_source_circuit_state{name="up"}') == 0
        stored = [o["Key"] for o in admin.list_objects_v2(Bucket=bucket)["Contents"]]
        assert stored == ["obj"]  # the refused "early" never reached S3
        no_secrets_in(relay, "hvs.t\n", secret)


def test_oidc_endpoint_failures_then_recovery(
    start: Callable[..., CredRelay], sts: harness.S3Server, role_arn: str, admin: Any,
    bucket: str, tmp_path: Path, tokens: Path,
) -> None:
    with tokens.open("a") as handle:
        handle.write("oidc-access-token-2\n")
    with FakeOIDC("relay-client", "s3cr3t", token="oidc-access-token-2") as idp:
        idp.fail_next("401")
        idp.fail_next("malformed")
        idp.fail_next("503")
        client_secret = secret_file(tmp_path / "client-secret", "s3cr3t\n")
        relay = start(f"""
[credentials:up]
source = oidc
token_url = {idp.token_url}
client_id = relay-client
client_secret_file = {client_secret}
role_arn = {role_arn}
sts_url = {sts.url}
retry_interval = 0.2
failure_threshold = 10
""")
        relay.wait_ready()
        round_trip(relay, bucket, admin)
        output = relay.relay.output()
        assert "token endpoint refused with 401" in output
        assert "token endpoint answered 200 with malformed JSON" in output
        assert "token endpoint refused with 503" in output
        assert metric(relay, 's3relay_credential_refresh_failures_total{name="up"}') == 3


def test_chain_recovers_when_instance_metadata_comes_back(
    start: Callable[..., CredRelay], sts: harness.S3Server, role_arn: str, admin: Any,
    bucket: str, tmp_path: Path,
) -> None:
    creds = temporary(sts, role_arn)
    expiration = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=14)
    with FakeIMDS(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"],
                  expiration) as imds:
        imds.fail_next("500", times=4)
        imds.fail_next("malformed", times=2)
        env = {k: v for k, v in harness.relay_env().items() if not k.startswith("AWS_")}
        env.update(
            AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url + "/",
            AWS_CONFIG_FILE=str(tmp_path / "no-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        )
        relay = start("[credentials:up]\nsource = chain\nretry_interval = 0.5\n"
                      "failure_threshold = 10\n", env=env)
        relay.wait_ready()
        round_trip(relay, bucket, admin)
        assert metric(relay, 's3relay_credential_refresh_failures_total{name="up"}') >= 1
        assert "found no credentials" in relay.relay.output() or \
            "credential chain:" in relay.relay.output()
