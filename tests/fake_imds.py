"""A fake EC2 instance metadata service speaking IMDSv2 as botocore uses it.

botocore's ``InstanceMetadataFetcher`` first PUTs ``/latest/api/token`` with
``X-aws-ec2-metadata-token-ttl-seconds`` and gets a session token as text;
then, sending that token in ``X-aws-ec2-metadata-token``, it GETs
``/latest/meta-data/iam/security-credentials/`` (the role name, as text) and
``/latest/meta-data/iam/security-credentials/<role>`` (a JSON document).
This fake requires the token (IMDSv2 only): a GET without a valid one gets
401, as on an instance with ``HttpTokens=required``.
"""

from __future__ import annotations

import datetime
import itertools
import threading

from tests.fake_http import FakeHTTPServer, RecordedRequest, Reply

TOKEN_PATH = "/latest/api/token"
CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
#: IMDS accepts session token lifetimes from one second to six hours.
MAX_TTL = 21600


def iso8601(moment: datetime.datetime | str) -> str:
    """IMDS's timestamp format, e.g. 2026-11-26T01:00:00Z (UTC)."""
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeIMDS(FakeHTTPServer):
    """IMDSv2 handing out one role's credentials; ``set_credentials`` rotates them."""

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        token: str,
        expiration: datetime.datetime | str,
        role: str = "s3relay-role",
    ) -> None:
        super().__init__()
        self._state_lock = threading.Lock()
        self._serial = itertools.count(1)
        self._session_tokens: set[str] = set()
        self.role = role
        self._credentials = (access_key, secret_key, token, iso8601(expiration))

    def __enter__(self) -> FakeIMDS:
        self.start()
        return self

    def set_credentials(
        self,
        access_key: str,
        secret_key: str,
        token: str,
        expiration: datetime.datetime | str,
    ) -> None:
        """Rotate: later credential GETs return these."""
        with self._state_lock:
            self._credentials = (access_key, secret_key, token, iso8601(expiration))

    def set_role(self, role: str) -> None:
        with self._state_lock:
            self.role = role

    def revoke_session_tokens(self) -> None:
        """Forget every IMDSv2 session token: GETs need a new PUT first."""
        with self._state_lock:
            self._session_tokens.clear()

    @property
    def session_tokens_issued(self) -> int:
        return sum(1 for r in self.requests if r.method == "PUT" and r.failure is None)

    # -- protocol --------------------------------------------------------

    def answer(self, request: RecordedRequest) -> Reply:
        if request.path == TOKEN_PATH:
            return self._token(request)
        if request.method != "GET":
            return Reply.text(405, "Method Not Allowed")
        session = request.header(TOKEN_HEADER)
        with self._state_lock:
            valid = session is not None and session in self._session_tokens
            role = self.role
            access_key, secret_key, token, expiration = self._credentials
        if not valid:
            return self.error_reply(401)
        if request.path == CREDENTIALS_PATH:
            return Reply.text(200, role)
        if request.path == CREDENTIALS_PATH + role:
            now = datetime.datetime.now(datetime.timezone.utc)
            return Reply.json(
                200,
                {
                    "Code": "Success",
                    "LastUpdated": iso8601(now),
                    "Type": "AWS-HMAC",
                    "AccessKeyId": access_key,
                    "SecretAccessKey": secret_key,
                    "Token": token,
                    "Expiration": expiration,
                },
            )
        return Reply.text(404, "Not Found")

    def _token(self, request: RecordedRequest) -> Reply:
        if request.method != "PUT":
            return Reply.text(405, "Method Not Allowed")
        ttl = request.header(TTL_HEADER)
        if ttl is None or not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TTL:
            return Reply.text(400, "Bad Request")
        session = f"AQAEAfake-imds-session-{next(self._serial)}=="
        with self._state_lock:
            self._session_tokens.add(session)
        return Reply.text(200, session, (TTL_HEADER, ttl))

    def error_reply(self, status: int) -> Reply:
        reasons = {401: "Unauthorized", 403: "Forbidden", 500: "Internal Server Error",
                   503: "Service Unavailable"}
        return Reply.text(status, reasons.get(status, "Error"))
