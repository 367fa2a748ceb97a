"""[credentials:NAME] sources: every source parsed, every mistake refused with its key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s3relay.config import ConfigError, CredentialSet, parse_config
from s3relay.credentials.service import static_only
from s3relay.credentials.spec import (
    AssumeRoleSpec,
    ChainSpec,
    OidcSpec,
    Refresh,
    StaticSpec,
    StsTarget,
    VaultSpec,
    WebIdentitySpec,
    sources_first,
)

UPSTREAM = "[upstream]\nurl = http://127.0.0.1:9000\nregion = us-east-1\n"
ROLE = "arn:aws:iam::123456789012:role/relay"
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def specs(body: str, base: Path | str = ".") -> dict[str, object]:
    return dict(parse_config(UPSTREAM + body, str(base)).credential_specs)


def error(body: str, base: Path | str = ".") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(UPSTREAM + body, str(base))
    return info.value


# -- static --------------------------------------------------------------------------


def test_static_is_the_default_and_stays_in_credentials() -> None:
    config = parse_config(
        UPSTREAM + "[credentials:main]\naccess_key_id = AK\nsecret_access_key = SK\n"
        "[client:a]\naccess_key_id = C\nsecret_access_key = S\ncredentials = main\n"
    )
    assert config.credential_specs["main"] == StaticSpec("main", CredentialSet("main", "AK", "SK"))
    assert config.credentials["main"] == CredentialSet("main", "AK", "SK")
    assert static_only(config).for_client(config, config.clients["a"]) == CredentialSet("main", "AK", "SK")


def test_static_explicit_with_files(tmp_path: Path) -> None:
    secret_file(tmp_path / "sk", "file-secret\n")
    secret_file(tmp_path / "tok", "file-token\n", 0o440)  # root:s3relay 0440 is fine
    got = specs(
        "[credentials:m]\nsource = static\naccess_key_id = AK\nsecret_access_key_file = sk\n"
        "session_token_file = tok\n",
        tmp_path,
    )
    assert got["m"] == StaticSpec("m", CredentialSet("m", "AK", "file-secret", "file-token"))


@pytest.mark.parametrize("mode", [0o604, 0o644, 0o660, 0o620])
@pytest.mark.parametrize("key", ["secret_access_key_file", "session_token_file"])
def test_static_file_open_to_others_refused(tmp_path: Path, mode: int, key: str) -> None:
    secret_file(tmp_path / "ok", "x")
    secret_file(tmp_path / "open", "secret-value-1234", mode)
    other = "session_token_file = ok" if key == "secret_access_key_file" \
        else "secret_access_key_file = ok"
    e = error(f"[credentials:m]\naccess_key_id = AK\n{key} = open\n{other}\n", tmp_path)
    assert (e.section, e.key) == ("credentials:m", key)
    assert str(tmp_path / "open") in str(e)
    assert "open to other users" in str(e)
    assert f"chmod 600 {tmp_path / 'open'}" in str(e)
    assert "secret-value-1234" not in str(e)


def test_static_errors(tmp_path: Path) -> None:
    e = error("[credentials:m]\naccess_key_id = AK\n")
    assert str(e) == "[credentials:m] secret_access_key: is required (or secret_access_key_file)"
    e = error("[credentials:m]\naccess_key_id = AK\nsecret_access_key = a\n"
              "secret_access_key_file = f\n")
    assert e.key == "secret_access_key"
    e = error("[credentials:m]\naccess_key_id = AK\nsecret_access_key_file = missing\n", tmp_path)
    assert "cannot read" in str(e) and e.key == "secret_access_key_file"
    secret_file(tmp_path / "empty", "  \n")
    e = error("[credentials:m]\naccess_key_id = AK\nsecret_access_key_file = empty\n", tmp_path)
    assert "is empty" in str(e)
    e = error("[credentials:m]\nsource = magic\n")
    assert e.key == "source" and "static, chain" in str(e)
    e = error("[credentials:m]\nsource = chain\naccess_key_id = AK\n")
    assert (e.key, str(e)) == ("access_key_id", "[credentials:m] access_key_id: unknown key")


# -- chain ---------------------------------------------------------------------------


def test_chain_with_and_without_profile() -> None:
    got = specs("[credentials:a]\nsource = chain\n[credentials:b]\nsource = chain\n"
                "profile = prod\nrefresh_margin = 120\nrefresh_jitter = 0\n")
    assert got["a"] == ChainSpec("a", None, Refresh())
    assert got["b"] == ChainSpec("b", "prod", Refresh(margin=120.0, jitter=0.0))


def test_refresh_keys() -> None:
    got = specs("[credentials:a]\nsource = chain\nrefresh_margin = 60\nrefresh_jitter = 5\n"
                "retry_interval = 2\nfailure_threshold = 4\nopen_interval = 30\ntimeout = 3\n")
    assert got["a"] == ChainSpec("a", None, Refresh(60.0, 5.0, 2.0, 4, 30.0, 3.0))


@pytest.mark.parametrize("key, value", [
    ("refresh_margin", "0"), ("refresh_margin", "x"), ("refresh_jitter", "-1"),
    ("refresh_jitter", "nan"), ("failure_threshold", "1.5"), ("open_interval", "0"),
    ("timeout", "-3"), ("retry_interval", "inf-ish"),
])
def test_refresh_key_errors(key: str, value: str) -> None:
    e = error(f"[credentials:a]\nsource = chain\n{key} = {value}\n")
    assert (e.section, e.key) == ("credentials:a", key)


# -- assume-role ----------------------------------------------------------------------


ASSUME = (
    "[credentials:base]\naccess_key_id = AK\nsecret_access_key = SK\n"
    "[credentials:role]\nsource = assume-role\nrole_arn = " + ROLE + "\n"
    "source_credentials = base\n"
)


def test_assume_role_defaults() -> None:
    got = specs(ASSUME)
    assert got["role"] == AssumeRoleSpec(
        "role",
        StsTarget(ROLE, "s3relay-role", 3600, "https://sts.us-east-1.amazonaws.com", "us-east-1"),
        None,
        "base",
        Refresh(),
    )


def test_assume_role_all_keys() -> None:
    got = specs(ASSUME + "external_id = ext-1\nsession_name = relay-session\nduration = 900\n"
                "sts_url = https://sts.eu-west-1.amazonaws.com/\nregion = eu-west-1\n")
    assert got["role"] == AssumeRoleSpec(
        "role",
        StsTarget(ROLE, "relay-session", 900, "https://sts.eu-west-1.amazonaws.com", "eu-west-1"),
        "ext-1",
        "base",
        Refresh(),
    )


def test_assume_role_chains_order_sources_first() -> None:
    got = parse_config(
        UPSTREAM + ASSUME.replace("[credentials:role]", "[credentials:top]")
        .replace("source_credentials = base", "source_credentials = role")
        + ASSUME.split("[credentials:role]")[0].replace("base", "unused")
        + "[credentials:role]\nsource = assume-role\nrole_arn = " + ROLE + "\n"
        "source_credentials = base\n"
    ).credential_specs
    order = sources_first(got)
    assert order.index("base") < order.index("role") < order.index("top")


@pytest.mark.parametrize("extra, key, message", [
    ("duration = 899\n", "duration", "900 to 43200"),
    ("duration = 43201\n", "duration", "900 to 43200"),
    ("duration = 1.5\n", "duration", "not a number"),
    ("sts_url = ftp://sts\n", "sts_url", "not an http(s) URL"),
    ("sts_url = https://user:pw@sts.example\n", "sts_url", "user name or password"),
    ("session_name = x\n", "session_name", "2 to 64"),
    ("bogus = 1\n", "bogus", "unknown key"),
])
def test_assume_role_errors(extra: str, key: str, message: str) -> None:
    e = error(ASSUME + extra)
    assert (e.section, e.key) == ("credentials:role", key)
    assert message in str(e)
    assert "pw" not in str(e) or key != "sts_url"


def test_assume_role_reference_errors() -> None:
    e = error(ASSUME.replace("source_credentials = base", "source_credentials = nope"))
    assert (e.section, e.key) == ("credentials:role", "source_credentials")
    assert "no [credentials:nope] section" in str(e)
    e = error(ASSUME.replace("source_credentials = base\n", ""))
    assert e.key == "source_credentials" and "required" in str(e)
    e = error(ASSUME.replace("role_arn = " + ROLE, "role_arn = relay"))
    assert e.key == "role_arn"


def test_assume_role_cycles_refused() -> None:
    me = ("[credentials:a]\nsource = assume-role\nrole_arn = " + ROLE +
          "\nsource_credentials = a\n")
    e = error(me)
    assert e.key == "source_credentials" and "cycle: a -> a" in str(e)
    two = me.replace("source_credentials = a", "source_credentials = b") + \
        me.replace("[credentials:a]", "[credentials:b]")
    e = error(two)
    assert "cycle" in str(e) and "a -> b -> a" in str(e) or "b -> a -> b" in str(e)


# -- web-identity ------------------------------------------------------------------------


def test_web_identity(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("jwt")  # a projected token is 0644: allowed
    got = specs("[credentials:w]\nsource = web-identity\nrole_arn = " + ROLE +
                "\ntoken_file = token\nsts_url = http://127.0.0.1:5000\n", tmp_path)
    assert got["w"] == WebIdentitySpec(
        "w",
        StsTarget(ROLE, "s3relay-w", 3600, "http://127.0.0.1:5000", "us-east-1"),
        str(tmp_path / "token"),
        Refresh(),
    )


def test_web_identity_errors(tmp_path: Path) -> None:
    e = error("[credentials:w]\nsource = web-identity\nrole_arn = " + ROLE +
              "\ntoken_file = missing\n", tmp_path)
    assert (e.key, "cannot read") == ("token_file", "cannot read") and "cannot read" in str(e)
    e = error("[credentials:w]\nsource = web-identity\nrole_arn = " + ROLE + "\n")
    assert e.key == "token_file"
    e = error("[credentials:w]\nsource = web-identity\ntoken_file = x\n")
    assert e.key in ("token_file", "role_arn")


# -- oidc ----------------------------------------------------------------------------------


def test_oidc(tmp_path: Path) -> None:
    secret_file(tmp_path / "cs", "client-secret-1\n")
    got = specs("[credentials:o]\nsource = oidc\ntoken_url = https://idp.example/token\n"
                "client_id = relay\nclient_secret_file = cs\nscope = s3 read\n"
                "role_arn = " + ROLE + "\nsts_url = http://127.0.0.1:5000\nduration = 1800\n",
                tmp_path)
    spec = got["o"]
    assert isinstance(spec, OidcSpec)
    assert (spec.token_url, spec.client_id, spec.scope) == (
        "https://idp.example/token", "relay", "s3 read")
    assert spec.client_secret.read() == "client-secret-1"
    assert spec.sts == StsTarget(ROLE, "s3relay-o", 1800, "http://127.0.0.1:5000", "us-east-1")
    assert "client-secret-1" not in repr(spec)
    inline = specs("[credentials:o]\nsource = oidc\ntoken_url = https://idp.example/token\n"
                   "client_id = relay\nclient_secret = inline-secret-9\nrole_arn = " + ROLE + "\n")
    assert inline["o"].client_secret.read() == "inline-secret-9"  # type: ignore[attr-defined]
    assert "inline-secret-9" not in repr(inline)


@pytest.mark.parametrize("body, key", [
    ("client_id = r\nclient_secret = s\nrole_arn = " + ROLE + "\n", "token_url"),
    ("token_url = https://i/t\nclient_secret = s\nrole_arn = " + ROLE + "\n", "client_id"),
    ("token_url = https://i/t\nclient_id = r\nrole_arn = " + ROLE + "\n", "client_secret"),
    ("token_url = https://i/t\nclient_id = r\nclient_secret = s\n", "role_arn"),
    ("token_url = file:///t\nclient_id = r\nclient_secret = s\nrole_arn = " + ROLE + "\n",
     "token_url"),
    ("token_url = https://i/t\nclient_id = r\nclient_secret = s\nclient_secret_file = f\n"
     "role_arn = " + ROLE + "\n", "client_secret"),
])
def test_oidc_errors(body: str, key: str) -> None:
    e = error("[credentials:o]\nsource = oidc\n" + body)
    assert (e.section, e.key) == ("credentials:o", key)


def test_oidc_secret_file_mode(tmp_path: Path) -> None:
    secret_file(tmp_path / "cs", "client-secret-1\n", 0o644)
    e = error("[credentials:o]\nsource = oidc\ntoken_url = https://i/t\nclient_id = r\n"
              "client_secret_file = cs\nrole_arn = " + ROLE + "\n", tmp_path)
    assert e.key == "client_secret_file" and "chmod 600" in str(e)


# -- vault ---------------------------------------------------------------------------------


def test_vault_token_and_approle(tmp_path: Path) -> None:
    secret_file(tmp_path / "tok", "hvs.token\n")
    secret_file(tmp_path / "sid", "secret-id\n")
    (tmp_path / "ca.pem").write_text(CA)
    got = specs(
        "[credentials:t]\nsource = vault\nvault_url = https://vault:8200/\npath = aws/creds/relay\n"
        "token_file = tok\nca_file = ca.pem\n"
        "[credentials:a]\nsource = vault\nvault_url = http://127.0.0.1:8200\n"
        "path = /aws/sts/relay/\nrole_id = rid\nsecret_id_file = sid\n",
        tmp_path,
    )
    t, a = got["t"], got["a"]
    assert isinstance(t, VaultSpec) and isinstance(a, VaultSpec)
    assert (t.vault_url, t.path, t.temporary, t.ca_pem) == (
        "https://vault:8200", "aws/creds/relay", False, CA.encode())
    assert t.token is not None and t.token.read() == "hvs.token"
    assert (a.path, a.temporary, a.role_id) == ("aws/sts/relay", True, "rid")
    assert a.secret_id is not None and a.secret_id.read() == "secret-id"
    assert "hvs.token" not in repr(got)


@pytest.mark.parametrize("body, key", [
    ("path = aws/creds/r\ntoken = t\n", "vault_url"),
    ("vault_url = http://v\ntoken = t\n", "path"),
    ("vault_url = http://v\npath = aws/other/r\ntoken = t\n", "path"),
    ("vault_url = http://v\npath = creds/r\ntoken = t\n", "path"),
    ("vault_url = http://v\npath = aws/creds/r\n", None),
    ("vault_url = http://v\npath = aws/creds/r\nrole_id = r\n", None),
    ("vault_url = http://v\npath = aws/creds/r\ntoken = t\nrole_id = r\n", "token"),
    ("vault_url = http://v\npath = aws/creds/r\ntoken = t\nca_file = ca.pem\n", "ca_file"),
    ("vault_url = https://v\npath = aws/creds/r\ntoken = t\nca_file = nothere\n", "ca_file"),
    ("vault_url = https://v\npath = aws/creds/r\ntoken = t\nca_file = notpem\n", "ca_file"),
    ("vault_url = https://v\npath = aws/creds/r\nrole_id = r\nsecret_id_file = open\n",
     "secret_id_file"),
])
def test_vault_errors(tmp_path: Path, body: str, key: str | None) -> None:
    (tmp_path / "ca.pem").write_text(CA)
    (tmp_path / "notpem").write_text("hello")
    secret_file(tmp_path / "open", "sid", 0o644)
    e = error("[credentials:v]\nsource = vault\n" + body, tmp_path)
    assert (e.section, e.key) == ("credentials:v", key)


# -- references from clients, check-config ------------------------------------------------


def test_client_may_name_any_source(tmp_path: Path) -> None:
    config = parse_config(
        UPSTREAM + "[credentials:c]\nsource = chain\n"
        "[client:a]\naccess_key_id = C\nsecret_access_key = S\ncredentials = c\n"
    )
    assert "c" not in config.credentials  # not static: fetched at run time
    assert isinstance(config.credential_specs["c"], ChainSpec)
    from s3relay.s3.errors import S3Error

    with pytest.raises(S3Error) as info:  # without providers: fail closed
        static_only(config).for_client(config, config.clients["a"])
    assert (info.value.code, info.value.status) == ("ServiceUnavailable", 503)


def test_secret_file_reread_at_use(tmp_path: Path) -> None:
    secret_file(tmp_path / "tok", "first")
    spec = specs("[credentials:t]\nsource = vault\nvault_url = http://v\npath = aws/creds/r\n"
                 "token_file = tok\n", tmp_path)["t"]
    assert isinstance(spec, VaultSpec) and spec.token is not None
    secret_file(tmp_path / "tok", "second")
    assert spec.token.read() == "second"
    os.chmod(tmp_path / "tok", 0o644)
    with pytest.raises(ConfigError):
        spec.token.read()
