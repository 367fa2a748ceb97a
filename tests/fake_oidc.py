"""A fake OAuth2 token endpoint (client-credentials grant, RFC 6749 §4.4).

``POST /token`` with an ``application/x-www-form-urlencoded`` body
``grant_type=client_credentials`` (and optionally ``scope``).  The client
authenticates either by HTTP Basic (``client_secret_basic``: id and secret
form-urlencoded, then base64, RFC 6749 §2.3.1) or by ``client_id`` and
``client_secret`` form fields (``client_secret_post``); using both is an
``invalid_request``.  Success is ``{"access_token", "token_type": "Bearer",
"expires_in", "scope"}`` with ``Cache-Control: no-store``; errors are
``{"error": ...}`` (401 ``invalid_client``, 400 ``unsupported_grant_type``,
``invalid_request``, ``invalid_scope``).
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Iterable
from urllib.parse import parse_qs, unquote_plus

from tests.fake_http import FakeHTTPServer, RecordedRequest, Reply

TOKEN_PATH = "/token"
NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


def oauth_error(status: int, error: str, *headers: tuple[str, str]) -> Reply:
    return Reply.json(status, {"error": error}, *NO_STORE, *headers)


class FakeOIDC(FakeHTTPServer):
    """One confidential client; ``set_token`` rotates the access token handed out."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        token: str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzM3JlbGF5In0.",
        expires_in: int = 3600,
        scopes: Iterable[str] | None = None,
    ) -> None:
        super().__init__()
        self._state_lock = threading.Lock()
        self._client = (client_id, client_secret)
        self._token = (token, expires_in)
        #: Scopes a client may ask for; None accepts any.
        self.allowed_scopes = None if scopes is None else frozenset(scopes)
        #: The ``scope`` parameter of each token request that reached the grant (None if absent).
        self.scopes: list[str | None] = []
        #: How each successful request authenticated: "basic" or "post".
        self.auth_methods: list[str] = []

    def __enter__(self) -> FakeOIDC:
        self.start()
        return self

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    def set_token(self, token: str, expires_in: int = 3600) -> None:
        with self._state_lock:
            self._token = (token, expires_in)

    def set_client(self, client_id: str, client_secret: str) -> None:
        with self._state_lock:
            self._client = (client_id, client_secret)

    # -- protocol --------------------------------------------------------

    def answer(self, request: RecordedRequest) -> Reply:
        if request.path.split("?", 1)[0] != TOKEN_PATH:
            return Reply.json(404, {"error": "not_found"})
        if request.method != "POST":
            return oauth_error(405, "invalid_request", ("Allow", "POST"))
        content_type = (request.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return oauth_error(400, "invalid_request")
        try:
            form = parse_qs(request.body.decode("ascii"), keep_blank_values=True,
                            strict_parsing=bool(request.body))
        except (UnicodeDecodeError, ValueError):
            return oauth_error(400, "invalid_request")
        if any(len(values) > 1 for values in form.values()):
            return oauth_error(400, "invalid_request")  # RFC 6749 §3.2: no repeats
        fields = {name: values[0] for name, values in form.items()}
        client, method = self._client_of(request, fields)
        if method == "both":
            return oauth_error(400, "invalid_request")
        with self._state_lock:
            expected = self._client
            token, expires_in = self._token
        if client != expected:
            challenge = ("WWW-Authenticate", 'Basic realm="fake-oidc"')
            return oauth_error(401, "invalid_client", *((challenge,) if method == "basic" else ()))
        grant = fields.get("grant_type")
        if grant is None:
            return oauth_error(400, "invalid_request")
        if grant != "client_credentials":
            return oauth_error(400, "unsupported_grant_type")
        scope = fields.get("scope")
        with self._state_lock:
            self.scopes.append(scope)
            self.auth_methods.append(method)
        if scope is not None and self.allowed_scopes is not None:
            if not set(scope.split()) <= self.allowed_scopes:
                return oauth_error(400, "invalid_scope")
        document: dict[str, object] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in,
        }
        if scope is not None:
            document["scope"] = scope
        return Reply.json(200, document, *NO_STORE)

    @staticmethod
    def _client_of(
        request: RecordedRequest, fields: dict[str, str]
    ) -> tuple[tuple[str, str] | None, str]:
        """The (id, secret) the client presented and how: "basic", "post", "both", "none"."""
        posted = "client_secret" in fields
        header = request.header("Authorization")
        if header is not None and header[:6].lower() == "basic ":
            if posted:
                return None, "both"
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None, "basic"
            client_id, colon, secret = decoded.partition(":")
            if not colon:
                return None, "basic"
            return (unquote_plus(client_id), unquote_plus(secret)), "basic"
        if posted:
            return (fields.get("client_id", ""), fields["client_secret"]), "post"
        return None, "none"

    def error_reply(self, status: int) -> Reply:
        errors = {401: "invalid_client", 403: "access_denied", 500: "server_error",
                  503: "temporarily_unavailable"}
        return oauth_error(status, errors.get(status, "server_error"))
