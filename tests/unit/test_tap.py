"""Tests for s3relay.tap (the twistd service), s3relay.cli (--check-config) and the plugin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.application.service import IService, IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins

from s3relay import cli
from s3relay.http.site import RelaySite
from s3relay.ops.management import ManagementSite
from s3relay.tap import DEFAULT_CONFIG, Options, makeService

REPO = Path(__file__).resolve().parents[2]

SECRET = "tap-test-secret/0123456789abcdef"
TOKEN = "tap-test-session-token-0123456789"

VALID = f"""\
[server]
listen = tcp:18080:interface=127.0.0.1
hostnames = relay.test
idle_timeout = 17

[upstream]
url = http://127.0.0.1:9000
region = us-east-1
max_connections = 5

[credentials:main]
access_key_id = AKIAUPSTREAM
secret_access_key = {SECRET}
session_token = {TOKEN}

[client:a]
access_key_id = AKIDA
secret_access_key = {SECRET}
credentials = main

[client:b]
access_key_id = AKIDB
secret_access_key_file = b.secret
credentials = self
"""


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    (tmp_path / "b.secret").write_text(SECRET + "-b\n")
    path = tmp_path / "s3relay.ini"
    path.write_text(VALID)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s3relay.ini"
    path.write_text(text)
    return path


# -- s3relay --check-config ----------------------------------------------------------


def test_check_config_ok(valid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--check-config", str(valid)]) == 0
    out, err = capsys.readouterr()
    assert out == (f"{valid}: ok (2 client keys, 1 credential sets, "
                   "upstream http://127.0.0.1:9000)\n")
    assert err == ""
    assert SECRET not in out and TOKEN not in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("credentials = main", "credentials = nowhere"),
         "[client:a] credentials: no [credentials:nowhere] section"),
        (("max_connections = 5", "max_connections = five"),
         "[upstream] max_connections: 'five' is not a number"),
        (("[credentials:main]", "[credentials:self]"),
         "[credentials:self]: 'self' is a reserved name"),
        (("b.secret", "missing.secret"), None),
        (("idle_timeout = 17", "idle_timeout = 17\ncolour = red"), "[server] colour: unknown key"),
        (("[client:b]", "[clients:b]"), "[clients:b]: unknown section"),
    ],
)
def test_check_config_bad(valid: Path, capsys: pytest.CaptureFixture[str],
                          change: tuple[str, str], message: str | None) -> None:
    valid.write_text(VALID.replace(*change))
    assert cli.main(["--check-config", str(valid)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1
    assert err.startswith(f"s3relay: {valid}: [")
    if message is not None:
        assert err == f"s3relay: {valid}: {message}\n"
    assert SECRET not in out + err and TOKEN not in out + err


def test_check_config_missing_secret_file_names_key(valid: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    valid.write_text(VALID.replace("b.secret", "missing.secret"))
    assert cli.main(["--check-config", str(valid)]) == 1
    _, err = capsys.readouterr()
    missing = os.path.join(str(valid.parent), "missing.secret")
    assert err == (f"s3relay: {valid}: [client:b] secret_access_key_file: cannot read "
                   f"{missing}: No such file or directory\n")


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.ini"
    assert cli.main(["--check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"s3relay: {path}: cannot read {path}: No such file or directory\n"


def test_check_config_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "--check-config" in capsys.readouterr().err


def test_check_config_default_path(monkeypatch: pytest.MonkeyPatch, valid: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    seen = []
    real = cli.load_config

    def fake(path: str):  # type: ignore[no-untyped-def]
        seen.append(path)
        return real(str(valid))

    monkeypatch.setattr(cli, "load_config", fake)
    assert cli.main(["--check-config"]) == 0
    assert seen == [DEFAULT_CONFIG] == ["/etc/s3relay/s3relay.ini"]
    assert capsys.readouterr().out.startswith("/etc/s3relay/s3relay.ini: ok (")


def test_check_config_syntax_error_is_one_line_without_secret(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID.replace(f"secret_access_key = {SECRET}\nsession",
                                         f"secret_access_key {SECRET}\nsession"))
    assert cli.main(["--check-config", str(path)]) == 1
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert err.count("\n") == 1


# -- twistd s3relay ------------------------------------------------------------------


def test_options_default_config() -> None:
    options = Options()
    options.parseOptions([])
    assert options["config"] == DEFAULT_CONFIG
    options = Options()
    options.parseOptions(["-c", "/x.ini"])
    assert options["config"] == "/x.ini"


def test_make_service_listens_where_configured(valid: Path) -> None:
    options = Options()
    options.parseOptions(["--config", str(valid)])
    reactor = MemoryReactorClock()
    service = makeService(options, reactor=reactor)
    assert IService.providedBy(service)
    assert reactor.tcpServers == []  # nothing listens before the service starts
    service.startService()
    try:
        assert len(reactor.tcpServers) == 1  # no [metrics] section: no management site
        port, site, _backlog, interface = reactor.tcpServers[0]
        assert (port, interface) == (18080, "127.0.0.1")
        assert isinstance(site, RelaySite)
        assert site.timeOut == 17.0
        assert site.displayTracebacks is False
    finally:
        service.stopService()


def test_make_service_with_management_site(valid: Path) -> None:
    valid.write_text(valid.read_text() + "\n[metrics]\nlisten = tcp:19102:interface=127.0.0.1\n")
    options = Options()
    options.parseOptions(["--config", str(valid)])
    reactor = MemoryReactorClock()
    service = makeService(options, reactor=reactor)
    service.startService()
    try:
        servers = {port: site for port, site, _backlog, _interface in reactor.tcpServers}
        assert isinstance(servers[18080], RelaySite)
        assert isinstance(servers[19102], ManagementSite)
    finally:
        service.stopService()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[client:b]", "[bogus]\n[client:b]"), "[bogus]: unknown section"),
        (("credentials = main", "credentials = nowhere"),
         "[client:a] credentials: no [credentials:nowhere] section"),
        (("url = http://127.0.0.1:9000", "url = ftp://h"),
         "[upstream] url: 'ftp://h' is not an http(s) URL"),
    ],
)
def test_make_service_bad_config(valid: Path, change: tuple[str, str], message: str) -> None:
    valid.write_text(VALID.replace(*change))
    options = Options()
    options.parseOptions(["--config", str(valid)])
    with pytest.raises(SystemExit) as info:
        makeService(options, reactor=MemoryReactorClock())
    assert info.value.code == f"s3relay: {valid}: {message}"
    assert SECRET not in str(info.value.code)


def test_make_service_missing_config(tmp_path: Path) -> None:
    options = Options()
    path = tmp_path / "nope.ini"
    options.parseOptions(["--config", str(path)])
    with pytest.raises(SystemExit) as info:
        makeService(options, reactor=MemoryReactorClock())
    assert info.value.code == f"s3relay: {path}: cannot read {path}: No such file or directory"


def test_make_service_bad_listen(valid: Path) -> None:
    valid.write_text(VALID.replace("tcp:18080:interface=127.0.0.1", "carrier-pigeon:7"))
    options = Options()
    options.parseOptions(["--config", str(valid)])
    with pytest.raises(SystemExit) as info:
        makeService(options, reactor=MemoryReactorClock())
    code = str(info.value.code)
    assert code.startswith(f"s3relay: {valid}: [server] listen: ")
    assert "carrier-pigeon" in code
    assert "\n" not in code


# -- the twistd plugin ----------------------------------------------------------------


def test_plugin_is_discoverable() -> None:
    import twisted.plugins

    makers = [p for p in getPlugins(IServiceMaker, twisted.plugins) if p.tapname == "s3relay"]
    assert len(makers) == 1
    maker = makers[0]
    assert maker.module == "s3relay.tap"
    assert maker.options is Options
    assert maker.makeService is makeService
    assert "S3" in maker.description


def test_plugin_directory_has_no_init() -> None:
    plugins = REPO / "twisted" / "plugins"
    assert (plugins / "s3relay_plugin.py").is_file()
    assert not (plugins / "__init__.py").exists()
    assert not (REPO / "twisted" / "__init__.py").exists()


def test_plugin_module_is_import_light() -> None:
    source = (REPO / "twisted" / "plugins" / "s3relay_plugin.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from twisted.application.service import ServiceMaker"]
