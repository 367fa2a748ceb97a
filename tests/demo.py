"""A one-step demo: a local S3 server, s3relay in front of it, and an aws command to try.

Run ``.venv/bin/python -m tests.demo``; Ctrl-C stops both.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests import harness

DEMO_KEY = ("AKIDS3RELAYDEMO00001", "demo-secret-change-me")


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="s3relay-demo-"))
    s3 = harness.start_s3(workdir)
    port = harness.free_port()
    relay = None
    try:
        s3.client().create_bucket(Bucket="demo")  # type: ignore[attr-defined]
        relay = harness.start_relay(
            workdir,
            f"""
[server]
listen = tcp:{port}:interface=127.0.0.1
region = us-east-1

[upstream]
url = {s3.url}
region = us-east-1

[credentials:upstream]
access_key_id = {s3.access_key}
secret_access_key = {s3.secret_key}

[client:demo]
access_key_id = {DEMO_KEY[0]}
secret_access_key = {DEMO_KEY[1]}
credentials = upstream
""",
            port,
        )
        venv_aws = Path(sys.executable).parent / "aws"
        aws = str(venv_aws) if venv_aws.exists() else shutil.which("aws") or "aws"
        env = f"AWS_ACCESS_KEY_ID={DEMO_KEY[0]} AWS_SECRET_ACCESS_KEY={DEMO_KEY[1]}"
        print(
            f"s3relay is listening on {relay.url} in front of a local S3 at {s3.url}\n"
            f"(config and logs in {workdir}). Try:\n\n"
            f"  {env} {aws} --region us-east-1 --endpoint-url {relay.url} s3 ls s3://demo\n"
            f"  {env} {aws} --region us-east-1 --endpoint-url {relay.url} s3 cp README.md s3://demo/\n\n"
            "Ctrl-C stops the demo.",
            flush=True,
        )
        while relay.process.poll() is None and s3.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        if relay is not None:
            harness.stop(relay.process)
        harness.stop(s3.process)


if __name__ == "__main__":
    main()
