#!/usr/bin/env python3
"""Per-request CPU of the relay's own pure code, in-process, without sockets.

    .venv/bin/python bench/hotpath.py            # microseconds per call

The end-to-end 1 KiB GET figures of ``run.py`` move with whatever else runs
on the machine; this times the pure steps every signed small GET pays for --
``sigv4.verify`` of a presigned URL and of a header-signed request, and
``forward.build_upstream_request`` (re-signing) -- with ``timeit`` (best of
several repeats), so that a change to them can be judged on its own.  No
Twisted reactor, no network.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import timeit
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

# ``--source DIR`` times another copy of the code (a baseline); it must be
# on sys.path before s3relay is imported.
_SOURCE = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--source=")),
               str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, _SOURCE)

from s3relay.body.plan import BodyPlan  # noqa: E402
from s3relay.config import CredentialSet, UpstreamConfig  # noqa: E402
from s3relay.s3 import sigv4  # noqa: E402
from s3relay.s3.addressing import parse_target  # noqa: E402
from s3relay.upstream.forward import build_upstream_request  # noqa: E402

CLIENT = ("AKIABENCHCLIENT00001", "benchclientsecret/" + "c" * 22)
UPSTREAM = CredentialSet("up", "AKIABENCHUPSTREAM001", "benchupstreamsecret/" + "u" * 20)
UP = UpstreamConfig("http://127.0.0.1:9000", "us-east-1", "path", 32)
HOST = "127.0.0.1:8080"


def signed_requests() -> dict[str, tuple[str, bytes, bytes, dict[str, list[str]]]]:
    """A presigned GET and a header-signed GET as botocore makes them."""
    import boto3  # type: ignore[import-untyped]
    from botocore.auth import S3SigV4Auth  # type: ignore[import-untyped]
    from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
    from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]
    from botocore.credentials import Credentials  # type: ignore[import-untyped]

    client = boto3.client(
        "s3", endpoint_url=f"http://{HOST}", region_name="us-east-1",
        aws_access_key_id=CLIENT[0], aws_secret_access_key=CLIENT[1],
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    url = urlsplit(client.generate_presigned_url(
        "get_object", Params={"Bucket": "bench", "Key": "small-1k.bin"}, ExpiresIn=3600))
    presigned = ("GET", url.path.encode(), url.query.encode(),
                 {"host": [HOST], "user-agent": ["wrk"]})
    aws = AWSRequest(method="GET", url=f"http://{HOST}/bench/small-1k.bin",
                     headers={"User-Agent": "Boto3/1.34 md/Botocore#1.34 ua/2.0 os/linux"})
    aws.context["payload_signing_enabled"] = False
    S3SigV4Auth(Credentials(*CLIENT), "s3", "us-east-1").add_auth(aws)
    headers = {name.lower(): [value if isinstance(value, str) else value.decode()]
               for name, value in aws.headers.items()}
    headers["host"] = [HOST]
    header_signed = ("GET", b"/bench/small-1k.bin", b"", headers)
    return {"presigned": presigned, "header-signed": header_signed}


def timed(name: str, call: Callable[[], object], number: int, repeat: int) -> float:
    call()  # warm caches (signing keys) and fail early
    best = min(timeit.repeat(call, number=number, repeat=repeat)) / number
    print(f"{name:<44} {best * 1e6:8.1f} us")
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per repeat")
    parser.add_argument("--repeat", type=int, default=7, help="repeats (the best counts)")
    parser.add_argument("--source", metavar="DIR", help="time the s3relay package in DIR "
                        "(write --source=DIR); default: this tree")
    args = parser.parse_args(argv)
    print(f"s3relay from {Path(sigv4.__file__).parent}")
    secrets = {CLIENT[0]: CLIENT[1]}
    cache = sigv4.SigningKeyCache()
    now = datetime.datetime.now(datetime.timezone.utc)
    plan = BodyPlan(0, sigv4.EMPTY_SHA256, {})
    total = 0.0
    for kind, (method, path, query, headers) in signed_requests().items():
        def verify(method: str = method, path: bytes = path, query: bytes = query,
                   headers: dict[str, list[str]] = headers) -> object:
            return sigv4.verify(method, path, query, headers, now, secrets.get,
                                frozenset({"us-east-1"}), cache)

        total += timed(f"sigv4.verify ({kind})", verify, args.number, args.repeat)
        target = parse_target(HOST, path, ())

        def build(method: str = method, query: bytes = query,
                  headers: dict[str, list[str]] = headers) -> object:
            return build_upstream_request(method, target, query, bool(query), headers, plan,
                                          UPSTREAM, UP, now, cache)

        total += timed(f"forward.build_upstream_request ({kind})", build, args.number,
                       args.repeat)
    print(f"{'sum':<44} {total * 1e6:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
