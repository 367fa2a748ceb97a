# -*- test-case-name: tests.integration.test_e2e_credentials -*-
"""Fetching credentials from each remote source, once, as a Deferred.

One function per ``source``; ``s3relay.credentials.service`` picks it and
``s3relay.credentials.provider`` decides when to call it.  HTTP goes through
treq over an injected Agent; botocore's credential chain blocks (files, IMDS
with its own sockets), so it runs in an injected thread pool, never on the
reactor thread.  STS calls are signed with botocore's SigV4 signer and sent
with treq: no botocore client, whose memory cost (DESIGN.md §6) buys nothing
here.

Answers are read with a cap (``MAX_ANSWER``): a source that streams
without end cannot grow the relay.
"""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any, Callable
from urllib.parse import quote, urlencode

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from s3relay.credentials.answers import (
    Fetched,
    SourceError,
    parse_oauth_token,
    parse_sts,
    parse_vault_creds,
    parse_vault_login,
)
from s3relay.credentials.spec import ChainSpec, CredentialSet, StsTarget, VaultSpec
from s3relay.ini import ConfigError

#: Bytes kept of one answer; STS, Vault and token answers are a few KiB.
MAX_ANSWER = 64 * 1024
STS_VERSION = "2011-06-15"
FORM = "application/x-www-form-urlencoded; charset=utf-8"


async def _answer(response: IResponse) -> tuple[int, bytes]:
    kept = bytearray()

    def sink(data: bytes) -> None:
        if len(kept) < MAX_ANSWER:
            kept.extend(data[: MAX_ANSWER - len(kept)])

    await treq.collect(response, sink)
    if len(kept) >= MAX_ANSWER:
        raise SourceError(f"answer larger than {MAX_ANSWER} bytes")
    return response.code, bytes(kept)


async def _request(
    agent: IAgent, method: str, url: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, bytes]:
    client = HTTPClient(agent)
    response = await client.request(
        method, url, headers=Headers({k: [v] for k, v in headers.items()}), data=body
    )
    return await _answer(response)


def read_secret(read: Callable[[], str]) -> str:
    """A secret file's value now, its ConfigError turned into a SourceError."""
    try:
        return read()
    except ConfigError as e:
        raise SourceError(str(e)) from None


# -- STS ----------------------------------------------------------------------


def _sts_body(action: str, target: StsTarget, **more: str | None) -> bytes:
    params = {
        "Action": action,
        "Version": STS_VERSION,
        "RoleArn": target.role_arn,
        "RoleSessionName": target.session_name,
        "DurationSeconds": str(target.duration),
    }
    params.update({k: v for k, v in more.items() if v is not None})
    return urlencode(params).encode("ascii")


def _signed_headers(
    url: str, body: bytes, credentials: CredentialSet, region: str
) -> dict[str, str]:
    from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
    from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
    from botocore.credentials import Credentials  # type: ignore[import-untyped]

    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": FORM})
    SigV4Auth(
        Credentials(
            credentials.access_key_id,
            credentials.secret_access_key,
            credentials.session_token,
        ),
        "sts",
        region,
    ).add_auth(request)
    return {name: value for name, value in request.headers.items()}


async def assume_role(
    agent: IAgent,
    name: str,
    target: StsTarget,
    external_id: str | None,
    source: CredentialSet,
) -> Fetched:
    """``AssumeRole``, signed with ``source``."""
    url = target.sts_url + "/"
    body = _sts_body("AssumeRole", target, ExternalId=external_id)
    headers = _signed_headers(url, body, source, target.region)
    status, answer = await _request(agent, "POST", url, headers, body)
    return parse_sts(name, status, answer)


async def assume_role_with_web_identity(
    agent: IAgent, name: str, target: StsTarget, token: str
) -> Fetched:
    """``AssumeRoleWithWebIdentity``: unsigned, the token is the proof."""
    body = _sts_body("AssumeRoleWithWebIdentity", target, WebIdentityToken=token)
    status, answer = await _request(
        agent, "POST", target.sts_url + "/", {"Content-Type": FORM}, body
    )
    return parse_sts(name, status, answer)


def read_token_file(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            token = handle.read(MAX_ANSWER).decode("utf-8").strip()
    except OSError as e:
        raise SourceError(f"cannot read token file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise SourceError(f"token file {path} is not UTF-8 text") from None
    if not token:
        raise SourceError(f"token file {path} is empty")
    return token


# -- OAuth2 client credentials --------------------------------------------------


async def oauth_token(
    agent: IAgent, token_url: str, client_id: str, client_secret: str, scope: str | None
) -> str:
    """RFC 6749 §4.4 with ``client_secret_basic`` (§2.3.1: form-encode, then base64)."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    basic = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    params = {"grant_type": "client_credentials"}
    if scope:
        params["scope"] = scope
    status, answer = await _request(
        agent,
        "POST",
        token_url,
        {"Content-Type": FORM, "Authorization": f"Basic {basic}", "Accept": "application/json"},
        urlencode(params).encode("ascii"),
    )
    return parse_oauth_token(status, answer)


# -- Vault ----------------------------------------------------------------------


async def vault(agent: IAgent, spec: VaultSpec, now: Callable[[], float]) -> Fetched:
    """Log in (AppRole) if needed, then read ``creds``/``sts`` of the AWS engine."""
    if spec.token is not None:
        token = read_secret(spec.token.read)
    else:
        assert spec.role_id is not None and spec.secret_id is not None
        login = json.dumps(
            {"role_id": spec.role_id, "secret_id": read_secret(spec.secret_id.read)}
        ).encode("utf-8")
        status, answer = await _request(
            agent,
            "POST",
            f"{spec.vault_url}/v1/auth/approle/login",
            {"Content-Type": "application/json"},
            login,
        )
        token = parse_vault_login(status, answer)
    status, answer = await _request(
        agent, "GET", f"{spec.vault_url}/v1/{spec.path}", {"X-Vault-Token": token}
    )
    fetched = parse_vault_creds(spec.name, status, answer, now())
    if spec.temporary and not fetched.credentials.session_token:
        raise SourceError("Vault sts answer has no security_token")
    return fetched


# -- botocore's chain -------------------------------------------------------------


def resolve_chain(name: str, profile: str | None) -> Fetched:
    """Blocking: run botocore's default chain once (call it in a thread)."""
    import botocore.exceptions  # type: ignore[import-untyped]
    import botocore.session  # type: ignore[import-untyped]

    try:
        session = botocore.session.Session(profile=profile)
        found: Any = session.get_credentials()
        if found is None:
            raise SourceError("the AWS credential chain found no credentials")
        frozen = found.get_frozen_credentials()
    except botocore.exceptions.ProfileNotFound:
        raise SourceError(f"credential chain: no profile {profile!r}") from None
    except botocore.exceptions.BotoCoreError as e:
        # Only the type: some messages carry a credential process's output.
        raise SourceError(f"credential chain: {type(e).__name__}") from None
    expiry_time = getattr(found, "_expiry_time", None)
    expiry = None
    if isinstance(expiry_time, datetime.datetime):
        expiry = expiry_time.timestamp()
    return Fetched(
        CredentialSet(name, frozen.access_key, frozen.secret_key, frozen.token or None), expiry
    )


def chain(reactor: Any, pool: ThreadPool, spec: ChainSpec) -> Deferred[Fetched]:
    result: Deferred[Fetched] = deferToThreadPool(
        reactor, pool, resolve_chain, spec.name, spec.profile
    )
    return result
