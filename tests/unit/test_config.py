"""Tests for s3relay.config: the frozen Config, its defaults, every error, no secret leaks."""

from __future__ import annotations

import dataclasses
import os
import string
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from s3relay.config import (
    ClientKey,
    Config,
    ConfigError,
    CredentialSet,
    ServerConfig,
    UpstreamConfig,
    load_config,
    parse_config,
)
from s3relay.credentials.service import static_only

FULL = """\
; a comment
[server]
listen = tcp:9000:interface=0.0.0.0
hostnames = S3.Example.Internal, relay.test ,
region = us-east-1 , eu-west-1,
idle_timeout = 12.5   ; seconds

[upstream]
url = https://s3.eu-central-1.amazonaws.com/
region = eu-central-1
addressing = virtual
max_connections = 7

[credentials:main]
access_key_id = AKIAUPSTREAM0000
secret_access_key = upstream-secret/0001
session_token = session-token-0001

[client:backup]
access_key_id = AKIDBACKUP0000
secret_access_key = backup-secret/0002
credentials = main

[client:me]
access_key_id = AKIDME00000000
secret_access_key = me-secret/0003
credentials = self
"""

MINIMAL = "[upstream]\nurl = http://127.0.0.1:9000\nregion = r1\n"

SECRETS = ("upstream-secret/0001", "session-token-0001", "backup-secret/0002", "me-secret/0003")


def error(text: str, base_dir: str = ".") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir)
    return info.value


# -- a valid config ---------------------------------------------------------------


def test_full_config_values() -> None:
    config = parse_config(FULL)
    assert config.server == ServerConfig(
        listen="tcp:9000:interface=0.0.0.0",
        hostnames=("s3.example.internal", "relay.test"),
        regions=("us-east-1", "eu-west-1"),
        idle_timeout=12.5,
    )
    assert config.upstream == UpstreamConfig(
        url="https://s3.eu-central-1.amazonaws.com",
        region="eu-central-1",
        addressing="virtual",
        max_connections=7,
    )
    assert dict(config.credentials) == {
        "main": CredentialSet("main", "AKIAUPSTREAM0000", "upstream-secret/0001",
                              "session-token-0001"),
    }
    backup = ClientKey("backup", "AKIDBACKUP0000", "backup-secret/0002", "main")
    me = ClientKey("me", "AKIDME00000000", "me-secret/0003", "self")
    assert dict(config.clients) == {"backup": backup, "me": me}
    assert dict(config.clients_by_key) == {"AKIDBACKUP0000": backup, "AKIDME00000000": me}
    assert config.client("AKIDBACKUP0000") == backup
    assert config.client("AKIDME00000000") == me
    assert config.client("AKIAUPSTREAM0000") is None  # credential sets are not client keys
    assert config.client("") is None


def test_upstream_credentials_named_set_and_self() -> None:
    config = parse_config(FULL)
    assert static_only(config).for_client(config, config.clients["backup"]) is config.credentials["main"]
    assert static_only(config).for_client(config, config.clients["me"]) == CredentialSet(
        "client:me", "AKIDME00000000", "me-secret/0003", None
    )


def test_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.server == ServerConfig(
        listen="tcp:8080:interface=127.0.0.1",
        hostnames=(),
        regions=("us-east-1",),
        idle_timeout=60.0,
    )
    assert config.upstream == UpstreamConfig(
        url="http://127.0.0.1:9000", region="r1", addressing="path", max_connections=32
    )
    assert isinstance(config.server.idle_timeout, float)
    assert isinstance(config.upstream.max_connections, int)
    assert dict(config.credentials) == {} and dict(config.clients) == {}


@pytest.mark.parametrize(("text", "allowed"), [
    ("", False), ("[server]\n", False), ("[server]\nallow_dot_segments =\n", False),
    ("[server]\nallow_dot_segments = no\n", False),
    ("[server]\nallow_dot_segments = yes\n", True),
])
def test_allow_dot_segments(text: str, allowed: bool) -> None:
    assert parse_config(MINIMAL + text).server.allow_dot_segments is allowed


def test_allow_dot_segments_documented_in_the_example() -> None:
    example = Path(__file__).parents[2] / "etc" / "s3relay" / "s3relay.ini"
    server = example.read_text().partition("\n[upstream]")[0]
    lines = [line.lstrip("; ") for line in server.splitlines()
             if line.lstrip("; ").startswith("allow_dot_segments = ")]
    assert lines == ["allow_dot_segments = no"]
    assert parse_config(MINIMAL + "[server]\n" + lines[0] + "\n").server.allow_dot_segments is False


def test_empty_values_take_the_defaults() -> None:
    config = parse_config(
        "[server]\nlisten =\nregion =\nidle_timeout =\n"
        "[upstream]\nurl = http://h\nregion = r\naddressing =\nmax_connections =\n"
    )
    assert config.server.listen == "tcp:8080:interface=127.0.0.1"
    assert config.server.regions == ("us-east-1",)
    assert config.server.idle_timeout == 60.0
    assert config.upstream.addressing == "path"
    assert config.upstream.max_connections == 32


def test_keys_are_case_insensitive_and_values_stripped() -> None:
    config = parse_config("[upstream]\nURL =   http://h:81  \nRegion = r \n")
    assert config.upstream.url == "http://h:81"
    assert config.upstream.region == "r"


def test_config_is_frozen() -> None:
    config = parse_config(FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server = config.server  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.upstream.url = "http://elsewhere"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.clients["me"].secret_access_key = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "netloc"),
    [
        ("http://s3.local", "s3.local"),
        ("http://s3.local:80", "s3.local"),
        ("https://s3.local:443", "s3.local"),
        ("http://s3.local:9000", "s3.local:9000"),
        ("https://s3.local:80", "s3.local:80"),
        ("http://s3.local:443", "s3.local:443"),
        ("http://S3.Local:9000/", "s3.local:9000"),
        ("http://[::1]:9000", "[::1]:9000"),
        ("https://[::1]", "[::1]"),
        ("http://user:pw@s3.local:8080", "s3.local:8080"),
    ],
)
def test_upstream_netloc(url: str, netloc: str) -> None:
    config = parse_config(f"[upstream]\nurl = {url}\nregion = r\n")
    assert config.upstream.netloc == netloc
    assert config.upstream.scheme == url.split(":", 1)[0].lower()


# -- secrets in files ------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_secret_file_relative_to_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    _write(tmp_path / "etc" / "secrets" / "backup.secret", "\n  file-secret/0009  \n\n")
    _write(tmp_path / "etc" / "secrets" / "upstream.secret", "upstream-file-secret").chmod(0o600)
    ini = _write(
        tmp_path / "etc" / "s3relay.ini",
        MINIMAL
        + "[credentials:main]\naccess_key_id = UP\n"
        + f"secret_access_key_file = {tmp_path / 'etc' / 'secrets' / 'upstream.secret'}\n"
        + "[client:backup]\naccess_key_id = BK\n"
        + "secret_access_key_file = secrets/backup.secret\ncredentials = main\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the config, not the working directory
    config = load_config(str(ini))
    assert config.clients["backup"].secret_access_key == "file-secret/0009"
    assert config.credentials["main"].secret_access_key == "upstream-file-secret"
    # A relative config path works the same.
    monkeypatch.chdir(tmp_path)
    assert load_config("etc/s3relay.ini") == config


def test_parse_config_base_dir(tmp_path: Path) -> None:
    _write(tmp_path / "k", "base-dir-secret")
    text = MINIMAL + "[client:a]\naccess_key_id = A\nsecret_access_key_file = k\ncredentials = self\n"
    assert parse_config(text, str(tmp_path)).clients["a"].secret_access_key == "base-dir-secret"


CLIENT_FILE = MINIMAL + "[client:a]\naccess_key_id = A\nsecret_access_key_file = {path}\n" \
    "credentials = self\n"


def test_secret_file_missing(tmp_path: Path) -> None:
    e = error(CLIENT_FILE.format(path="nope.secret"), str(tmp_path))
    path = os.path.join(str(tmp_path), "nope.secret")
    assert str(e) == f"[client:a] secret_access_key_file: cannot read {path}: No such file or directory"
    assert (e.section, e.key) == ("client:a", "secret_access_key_file")


def test_secret_file_unreadable(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()  # reading a directory fails even as root
    e = error(CLIENT_FILE.format(path="adir"), str(tmp_path))
    path = os.path.join(str(tmp_path), "adir")
    assert str(e) == f"[client:a] secret_access_key_file: cannot read {path}: Is a directory"


@pytest.mark.parametrize("content", ["", "\n", "  \n\t\n"])
def test_secret_file_empty(tmp_path: Path, content: str) -> None:
    _write(tmp_path / "empty", content)
    e = error(CLIENT_FILE.format(path="empty"), str(tmp_path))
    path = os.path.join(str(tmp_path), "empty")
    assert str(e) == f"[client:a] secret_access_key_file: {path} is empty"


def test_secret_inline_and_file(tmp_path: Path) -> None:
    _write(tmp_path / "k", "file-secret-xyz")
    text = (MINIMAL + "[credentials:c]\naccess_key_id = A\nsecret_access_key = inline-secret-xyz\n"
            "secret_access_key_file = k\n")
    e = error(text, str(tmp_path))
    assert str(e) == (
        "[credentials:c] secret_access_key: give secret_access_key or "
        "secret_access_key_file, not both"
    )
    assert "inline-secret-xyz" not in str(e) and "file-secret-xyz" not in str(e)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.ini")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"cannot read {path}: No such file or directory"


# -- every error names its section and key ---------------------------------------------

CLIENT = "[client:a]\naccess_key_id = A\nsecret_access_key = s3cr3t-value\ncredentials = self\n"


@pytest.mark.parametrize(
    ("text", "section", "key", "message"),
    [
        (MINIMAL + "[bogus]\n", "bogus", None, "[bogus]: unknown section"),
        (MINIMAL + "[server:x]\n", "server:x", None, "[server:x]: unknown section"),
        (MINIMAL + "[clients:x]\n", "clients:x", None, "[clients:x]: unknown section"),
        (MINIMAL + "[server]\ncolour = blue\n", "server", "colour", "[server] colour: unknown key"),
        (MINIMAL + "color = 1\n", "upstream", "color", "[upstream] color: unknown key"),
        (MINIMAL + CLIENT + "token = x\n", "client:a", "token", "[client:a] token: unknown key"),
        (MINIMAL + "[credentials:c]\naccess_key_id = A\nsecret_access_key = s\nsession = t\n",
         "credentials:c", "session", "[credentials:c] session: unknown key"),
        ("[server]\n", "upstream", None, "[upstream]: section is required"),
        ("", "upstream", None, "[upstream]: section is required"),
        ("[upstream]\nregion = r\n", "upstream", "url", "[upstream] url: is required"),
        ("[upstream]\nurl =\nregion = r\n", "upstream", "url", "[upstream] url: is required"),
        ("[upstream]\nurl = http://h\n", "upstream", "region", "[upstream] region: is required"),
        (MINIMAL + "[client:a]\nsecret_access_key = s\ncredentials = self\n",
         "client:a", "access_key_id", "[client:a] access_key_id: is required"),
        (MINIMAL + "[client:a]\naccess_key_id = A\nsecret_access_key = s\n",
         "client:a", "credentials", "[client:a] credentials: is required"),
        (MINIMAL + "[client:a]\naccess_key_id = A\ncredentials = self\n",
         "client:a", "secret_access_key",
         "[client:a] secret_access_key: is required (or secret_access_key_file)"),
        (MINIMAL + "[credentials:c]\naccess_key_id = A\nsecret_access_key =\n",
         "credentials:c", "secret_access_key",
         "[credentials:c] secret_access_key: is required (or secret_access_key_file)"),
        ("[upstream]\nurl = ftp://h\nregion = r\n", "upstream", "url",
         "[upstream] url: 'ftp://h' is not an http(s) URL"),
        ("[upstream]\nurl = s3.local:9000\nregion = r\n", "upstream", "url",
         "[upstream] url: 's3.local:9000' is not an http(s) URL"),
        ("[upstream]\nurl = http://\nregion = r\n", "upstream", "url",
         "[upstream] url: 'http://' is not an http(s) URL"),
        ("[upstream]\nurl = http://h/bucket\nregion = r\n", "upstream", "url",
         "[upstream] url: must not have a path or query"),
        ("[upstream]\nurl = http://h/?x=1\nregion = r\n", "upstream", "url",
         "[upstream] url: must not have a path or query"),
        ("[upstream]\nurl = http://h:99999\nregion = r\n", "upstream", "url",
         "[upstream] url: 'http://h:99999' has a bad port"),
        ("[upstream]\nurl = http://h:port\nregion = r\n", "upstream", "url",
         "[upstream] url: 'http://h:port' has a bad port"),
        (MINIMAL + "addressing = dns\n", "upstream", "addressing",
         "[upstream] addressing: must be path or virtual"),
        (MINIMAL + "addressing = Path\n", "upstream", "addressing",
         "[upstream] addressing: must be path or virtual"),
        (MINIMAL + "header_charset = utf-16\n", "upstream", "header_charset",
         "[upstream] header_charset: must be utf-8 or latin-1"),
        (MINIMAL + "binds_upload_ids = true\n", "upstream", "binds_upload_ids",
         "[upstream] binds_upload_ids: must be yes or no"),
        (MINIMAL + "max_connections = many\n", "upstream", "max_connections",
         "[upstream] max_connections: 'many' is not a number"),
        (MINIMAL + "max_connections = 1.5\n", "upstream", "max_connections",
         "[upstream] max_connections: '1.5' is not a number"),
        (MINIMAL + "max_connections = 0\n", "upstream", "max_connections",
         "[upstream] max_connections: must be greater than 0"),
        (MINIMAL + "max_connections = -3\n", "upstream", "max_connections",
         "[upstream] max_connections: must be greater than 0"),
        (MINIMAL + "[server]\nidle_timeout = soon\n", "server", "idle_timeout",
         "[server] idle_timeout: 'soon' is not a number"),
        (MINIMAL + "[server]\nidle_timeout = 0\n", "server", "idle_timeout",
         "[server] idle_timeout: must be greater than 0"),
        (MINIMAL + "[server]\nidle_timeout = -0.5\n", "server", "idle_timeout",
         "[server] idle_timeout: must be greater than 0"),
        (MINIMAL + "[server]\nregion = , ,\n", "server", "region", "[server] region: names no region"),
        (MINIMAL + CLIENT.replace("= self", "= nowhere"), "client:a", "credentials",
         "[client:a] credentials: no [credentials:nowhere] section"),
        (MINIMAL + CLIENT + CLIENT.replace("[client:a]", "[client:b]"), "client:b",
         "access_key_id", "[client:b] access_key_id: already used by [client:a]"),
        (MINIMAL + "[credentials:self]\naccess_key_id = A\nsecret_access_key = s\n",
         "credentials:self", None, "[credentials:self]: 'self' is a reserved name"),
        (MINIMAL + "[client:]\naccess_key_id = A\n", "client:", None,
         "[client:]: needs a name: [client:NAME]"),
        (MINIMAL + "[credentials:  ]\naccess_key_id = A\n", "credentials:  ", None,
         "[credentials:  ]: needs a name: [credentials:NAME]"),
        (MINIMAL + "[client]\naccess_key_id = A\n", "client", None,
         "[client]: needs a name: [client:NAME]"),
        (MINIMAL + CLIENT + "operations = read, nuke\n", "client:a", "operations",
         "[client:a] operations: unknown operation class 'nuke' (one of read, list, write,"
         " delete, multipart, bucket-admin, or all)"),
        (MINIMAL + CLIENT + "prefixes = photos/\n", "client:a", "prefixes",
         "[client:a] prefixes: 'photos/' is not BUCKET:PREFIX (e.g. photos:2024/)"),
        (MINIMAL + CLIENT + "read_only = true\n", "client:a", "read_only",
         "[client:a] read_only: must be yes or no"),
        (MINIMAL + CLIENT + "read_only = yes\noperations = read\n", "client:a", "read_only",
         "[client:a] read_only: give read_only or operations, not both"),
        (MINIMAL + CLIENT + "buckets = ,\n", "client:a", "buckets",
         "[client:a] buckets: names no bucket"),
        (MINIMAL + "[server]\nallow_dot_segments = true\n", "server", "allow_dot_segments",
         "[server] allow_dot_segments: must be yes or no"),
        (MINIMAL + "[server]\nallow_dot_segments = Yes\n", "server", "allow_dot_segments",
         "[server] allow_dot_segments: must be yes or no"),
    ],
)
def test_errors_name_section_and_key(text: str, section: str, key: str | None, message: str
                                     ) -> None:
    e = error(text)
    assert str(e) == message
    assert (e.section, e.key) == (section, key)
    assert "s3cr3t-value" not in str(e)


def test_client_keys_do_not_collide_with_credential_sets() -> None:
    # The same key id as an upstream credential set and a client is allowed.
    text = MINIMAL + "[credentials:c]\naccess_key_id = A\nsecret_access_key = s\n" + CLIENT
    assert parse_config(text).client("A") == ClientKey("a", "A", "s3cr3t-value", "self")


def test_ini_syntax_errors_are_config_errors() -> None:
    e = error(MINIMAL + "[upstream]\nurl = http://x\n")
    assert e.section == "" and e.key is None
    assert str(e).startswith("not a valid ini file: ")
    assert "upstream" in str(e) and "already exists" in str(e)
    e = error(MINIMAL + "region = again\n")
    assert str(e).startswith("not a valid ini file: ")
    assert "'region'" in str(e) and "upstream" in str(e)


@pytest.mark.parametrize(
    "text",
    [
        "secret_access_key = TOPSECRET-LINE-1\n" + MINIMAL,
        MINIMAL + "[credentials:c]\naccess_key_id = A\nsecret_access_key TOPSECRET-LINE-1\n",
    ],
)
def test_ini_syntax_errors_are_one_line_without_the_line_content(text: str) -> None:
    e = error(text)
    assert "TOPSECRET-LINE-1" not in str(e)
    assert "\n" not in str(e)


@pytest.mark.parametrize("url", ["http://[::1", "http://[not-an-ip]:80"])
def test_malformed_ipv6_url_is_a_config_error(url: str) -> None:
    e = error(f"[upstream]\nurl = {url}\nregion = r\n")
    assert (e.section, e.key) == ("upstream", "url")


@pytest.mark.parametrize("url", ["http://s3.local#frag", "http://s3.local/#", "http://s3.local?"])
def test_url_with_fragment_or_empty_query_refused(url: str) -> None:
    e = error(f"[upstream]\nurl = {url}\nregion = r\n")
    assert (e.section, e.key) == ("upstream", "url")


def test_nul_in_secret_file_name_is_a_config_error() -> None:
    e = error(CLIENT_FILE.format(path="a\0b"))
    assert (e.section, e.key) == ("client:a", "secret_access_key_file")


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_nan_idle_timeout_refused(value: str) -> None:
    e = error(MINIMAL + f"[server]\nidle_timeout = {value}\n")
    assert (e.section, e.key) == ("server", "idle_timeout")


def test_two_sections_with_the_same_stripped_name_refused() -> None:
    text = MINIMAL + CLIENT + CLIENT.replace("[client:a]", "[client: a]").replace("= A", "= B")
    e = error(text)
    assert e.section in ("client:a", "client: a")


# -- secrets never leak ------------------------------------------------------------------


def test_repr_has_no_secret() -> None:
    config = parse_config(FULL)
    for text in (repr(config), str(config), repr(config.clients), repr(config.credentials),
                 repr(static_only(config).for_client(config, config.clients["me"]))):
        for secret in SECRETS:
            assert secret not in text
    assert "AKIDBACKUP0000" in repr(config)  # the key ids are fine to show


_SECRET = st.text(string.ascii_letters + string.digits + "/+=", min_size=16, max_size=60)

#: Configs that fail, with {s} where a secret goes.
_BROKEN = [
    MINIMAL + "[client:a]\naccess_key_id = A\nsecret_access_key = {s}\ncredentials = missing\n",
    MINIMAL + "[client:a]\naccess_key_id = A\nsecret_access_key = {s}\ncredentials = self\n"
    "[client:b]\naccess_key_id = A\nsecret_access_key = {s}\ncredentials = self\n",
    MINIMAL + "[client:a]\naccess_key_id = A\nsecret_access_key = {s}\ncredentials = self\n"
    "unknown = 1\n",
    MINIMAL + "[client:a]\naccess_key_id = A\nsecret_access_key = {s}\n",
    MINIMAL + "[client:a]\nsecret_access_key = {s}\ncredentials = self\n",
    MINIMAL + "[client:a]\naccess_key_id = A\nsecret_access_key = {s}\n"
    "secret_access_key_file = f\ncredentials = self\n",
    MINIMAL + "[credentials:self]\naccess_key_id = A\nsecret_access_key = {s}\n",
    MINIMAL + "[credentials:c]\naccess_key_id = A\nsecret_access_key = {s}\nsession_token = {s}\n"
    "[bogus]\n",
    MINIMAL + "[credentials:c]\naccess_key_id = A\nsecret_access_key = x\nsession_token = {s}\n"
    "extra = 2\n",
    MINIMAL + "[credentials:c]\nsecret_access_key = {s}\n",
    MINIMAL + "max_connections = 0\n[credentials:c]\naccess_key_id = A\nsecret_access_key = {s}\n",
    "[credentials:c]\naccess_key_id = A\nsecret_access_key = {s}\n",
    MINIMAL + "[credentials:c]\naccess_key_id = A\nsecret_access_key = {s}\n"
    "[credentials:c]\naccess_key_id = B\n",
    MINIMAL + "[credentials:c]\naccess_key_id = A\nsecret_access_key = {s}\n"
    "secret_access_key = {s}\n",
]


@settings(max_examples=60, deadline=None)
@given(secret=_SECRET, template=st.sampled_from(_BROKEN))
def test_errors_never_contain_a_secret(secret: str, template: str) -> None:
    e = error(template.format(s=secret))
    assert secret not in str(e)
    assert secret not in repr(e)
    assert "\n" not in str(e)


@settings(max_examples=60, deadline=None)
@given(secret=_SECRET, token=_SECRET)
def test_repr_never_contains_a_secret(secret: str, token: str) -> None:
    config = parse_config(
        MINIMAL + f"[credentials:c]\naccess_key_id = A\nsecret_access_key = {secret}\n"
        f"session_token = {token}\n[client:a]\naccess_key_id = B\nsecret_access_key = {secret}\n"
        "credentials = c\n"
    )
    assert config.credentials["c"].secret_access_key == secret
    assert config.credentials["c"].session_token == token
    assert config.clients["a"].secret_access_key == secret
    for text in (repr(config), str(config.credentials), str(config.clients)):
        assert secret not in text and token not in text


@settings(max_examples=60, deadline=None)
@given(secret=_SECRET)
def test_secret_file_errors_never_contain_the_secret(tmp_path_factory: pytest.TempPathFactory,
                                                     secret: str) -> None:
    base = tmp_path_factory.mktemp("secret")
    _write(base / "k", secret + "\n")
    text = (MINIMAL + "[client:a]\naccess_key_id = A\nsecret_access_key_file = k\n"
            "credentials = nowhere\n")
    e = error(text, str(base))
    assert str(e) == "[client:a] credentials: no [credentials:nowhere] section"
    assert secret not in str(e)


# -- arbitrary input raises only ConfigError --------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    try:
        config = parse_config(text)
    except ConfigError:
        return
    assert isinstance(config, Config)


_SECTIONS = st.sampled_from(
    ["server", "upstream", "client:a", "client:b", "credentials:c", "credentials:self",
     "client:", "bogus", "\0"]
)
_KEYS = st.sampled_from(
    ["listen", "hostnames", "region", "idle_timeout", "url", "addressing", "max_connections",
     "access_key_id", "secret_access_key", "secret_access_key_file", "session_token",
     "credentials", "other"]
)
_VALUES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20),
    st.sampled_from(["http://h", "https://h:443/", "http://[::1]:9", "http://h:0", "1", "0",
                     "-1", "1e3", "inf", "nan", "self", "c", "path", "virtual", "http://[",
                     "a\0b", ","]),
)


@st.composite
def _ini(draw: st.DrawFn) -> str:
    lines = []
    for section in draw(st.lists(_SECTIONS, max_size=5)):
        lines.append(f"[{section}]")
        for key, value in draw(st.lists(st.tuples(_KEYS, _VALUES), max_size=6)):
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None)
@example("[upstream]\nurl = http://[\nregion = r\n")
@example(CLIENT_FILE.format(path="a\0b"))
@given(_ini())
def test_structured_text_raises_only_config_error(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError as e:
        assert str(e)


def test_client_policy_keys() -> None:
    from s3relay.access.policy import ALLOW_ALL, ClientPolicy

    config = parse_config(
        MINIMAL + CLIENT + "buckets = data, logs-*\nprefixes = data:photos/, *:public/\n"
        "operations = read, list, write\n"
        + CLIENT.replace("[client:a]", "[client:b]").replace("= A\n", "= B\n")
        + "read_only = yes\n"
        + CLIENT.replace("[client:a]", "[client:c]").replace("= A\n", "= C\n")
    )
    assert config.clients["a"].policy == ClientPolicy(
        ("data", "logs-*"),
        (("data", "photos/"), ("*", "public/")),
        frozenset({"read", "list", "write"}),
    )
    assert config.clients["b"].policy.operations == frozenset({"read", "list"})
    assert config.clients["c"].policy == ALLOW_ALL
