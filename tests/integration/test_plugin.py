"""The installed command line, as an operator meets it: outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_twistd_finds_the_plugin_from_anywhere(tmp_path: Path) -> None:
    result = run(str(BIN / "twistd"), "--help", cwd=tmp_path)
    assert "s3relay" in result.stdout


def test_bad_config_stops_startup_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "s3relay.ini"
    config.write_text("[upstream]\nurl = http://127.0.0.1:9\nregion = r\n[bogus]\n")
    result = run(str(BIN / "twistd"), "-n", "--pidfile=", "s3relay", "--config", str(config),
                 cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip() == f"s3relay: {config}: [bogus]: unknown section"
    assert "Traceback" not in result.stdout + result.stderr


def test_check_config_command(tmp_path: Path) -> None:
    config = tmp_path / "s3relay.ini"
    config.write_text("[upstream]\nurl = http://127.0.0.1:9\nregion = r\n"
                      "[client:a]\naccess_key_id = A\nsecret_access_key = topsecret\n"
                      "credentials = nowhere\n")
    result = run(str(BIN / "s3relay"), "--check-config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "[client:a] credentials: no [credentials:nowhere] section" in result.stderr
    assert "topsecret" not in result.stdout + result.stderr
    config.write_text(config.read_text().replace("nowhere", "self"))
    result = run(str(BIN / "s3relay"), "--check-config", str(config), cwd=tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout


def test_check_config_loads_the_listener(tmp_path: Path) -> None:
    config = tmp_path / "s3relay.ini"
    config.write_text("[server]\nlisten = ssl:8443:privateKey=/nonexistent.pem\n"
                      "[upstream]\nurl = http://127.0.0.1:9\nregion = r\n")
    result = run(str(BIN / "s3relay"), "--check-config", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"s3relay: {config}: [server] listen: ")
    assert "nonexistent.pem" in result.stderr and "Traceback" not in result.stderr
