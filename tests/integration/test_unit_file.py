"""The systemd unit is valid as systemd reads it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

UNIT = REPO / "systemd" / "s3relay.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    text = UNIT.read_text()
    assert "Type=notify" in text and "--pidfile=" in text and "User=s3relay" in text
    unit = tmp_path / "s3relay.service"
    unit.write_text(text.replace("/usr/bin/twistd3", str(bin_dir / "twistd"))
                        .replace("/usr/bin/s3relay", str(bin_dir / "s3relay")))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "s3relay.service" in line]
    assert problems == [] and result.returncode == 0, result.stderr


SOCKET = REPO / "systemd" / "s3relay.socket"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_socket(tmp_path: Path) -> None:
    """The optional socket unit, verified together with the service it starts."""
    bin_dir = Path(sys.executable).parent
    text = SOCKET.read_text()
    assert "ListenStream=443" in text and "Service=s3relay.service" in text
    assert "listen = systemd:domain=INET6:index=0" in text
    (tmp_path / "s3relay.socket").write_text(text)
    (tmp_path / "s3relay.service").write_text(
        UNIT.read_text().replace("/usr/bin/twistd3", str(bin_dir / "twistd"))
                        .replace("/usr/bin/s3relay", str(bin_dir / "s3relay")))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "s3relay.socket"),
         str(tmp_path / "s3relay.service")],
        capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "s3relay." in line]
    assert problems == [] and result.returncode == 0, result.stderr
