"""A fake HashiCorp Vault: AppRole login and the AWS secrets engine, over real HTTP.

Shapes follow Vault's HTTP API documentation: every response is the generic
envelope ``{request_id, lease_id, renewable, lease_duration, data, wrap_info,
warnings, auth}``; errors are ``{"errors": [...]}``.  Covered endpoints:

- ``POST /v1/auth/approle/login`` ``{"role_id", "secret_id"}`` → ``auth``
  with ``client_token``, ``accessor``, ``policies``, ``lease_duration``,
  ``renewable``.  Wrong IDs → 400 ``invalid role or secret ID``.
- ``GET|POST /v1/<mount>/creds/<role>`` (``iam_user``): ``data`` with
  ``access_key``, ``secret_key``, ``security_token`` null; a renewable lease
  ``<mount>/creds/<role>/<id>``.
- ``GET|POST /v1/<mount>/sts/<role>`` (STS): ``security_token`` set, not renewable.
- ``PUT|POST /v1/sys/leases/renew`` ``{"lease_id", "increment"}``.

The client token goes in ``X-Vault-Token`` (or ``Authorization: Bearer``);
a missing or unknown one gets 403 ``permission denied``.  Unknown paths get
404 ``{"errors": []}``.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from tests.fake_http import FakeHTTPServer, RecordedRequest, Reply


@dataclass(frozen=True)
class VaultCredentials:
    """What the AWS secrets engine hands out next."""

    access_key: str
    secret_key: str
    #: Returned by the ``sts`` path only (``creds`` for iam_user has none).
    security_token: str
    lease_duration: int


def envelope(**fields: Any) -> dict[str, Any]:
    """Vault's generic response envelope with ``fields`` filled in."""
    document: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": None,
        "wrap_info": None,
        "warnings": None,
        "auth": None,
    }
    document.update(fields)
    return document


def errors(status: int, *messages: str) -> Reply:
    return Reply.json(status, {"errors": list(messages)})


class FakeVault(FakeHTTPServer):
    """Vault with one AppRole, one static token and one AWS secrets engine role."""

    def __init__(
        self,
        token: str = "hvs.fake-root-token",
        role_id: str = "fake-role-id",
        secret_id: str = "fake-secret-id",
        mount: str = "aws",
        role: str = "s3relay",
        access_key: str = "AKIAVAULTFAKE0000001",
        secret_key: str = "vault-fake-secret/0000000000000000000000",
        security_token: str = "vault-fake-session-token",
        lease_duration: int = 3600,
        token_ttl: int = 2764800,
    ) -> None:
        super().__init__()
        self._state_lock = threading.Lock()
        self._serial = itertools.count(1)
        self.mount = mount
        self.role = role
        self.token_ttl = token_ttl
        self._tokens = {token}
        self._login_tokens: list[str] = []
        self._approle = (role_id, secret_id)
        self._credentials = VaultCredentials(access_key, secret_key, security_token,
                                             lease_duration)
        #: Leases handed out, by id (renewals look them up).
        self.leases: dict[str, int] = {}

    def __enter__(self) -> FakeVault:
        self.start()
        return self

    # -- setters ---------------------------------------------------------

    def set_credentials(
        self,
        access_key: str,
        secret_key: str,
        security_token: str = "vault-fake-session-token",
        lease_duration: int = 3600,
    ) -> None:
        """Rotate what creds/sts hand out next."""
        with self._state_lock:
            self._credentials = VaultCredentials(access_key, secret_key, security_token,
                                                 lease_duration)

    def set_approle(self, role_id: str, secret_id: str) -> None:
        with self._state_lock:
            self._approle = (role_id, secret_id)

    def set_tokens(self, *tokens: str) -> None:
        """Replace the set of valid client tokens (revokes logins too)."""
        with self._state_lock:
            self._tokens = set(tokens)

    def revoke_tokens(self) -> None:
        self.set_tokens()

    @property
    def issued_tokens(self) -> list[str]:
        """Client tokens handed out by AppRole logins, oldest first."""
        with self._state_lock:
            return list(self._login_tokens)

    # -- protocol --------------------------------------------------------

    def answer(self, request: RecordedRequest) -> Reply:
        path = request.path.split("?", 1)[0]
        if path == "/v1/auth/approle/login":
            if request.method not in ("POST", "PUT"):
                return errors(405, "unsupported operation")
            return self._login(request)
        parts = path.split("/")
        # ["", "v1", <mount...>, "creds"|"sts", <role>]
        if path in ("/v1/sys/leases/renew", "/v1/sys/renew"):
            return self._authorized(request) or self._renew(request)
        if len(parts) >= 5 and parts[1] == "v1" and parts[-2] in ("creds", "sts"):
            mount = "/".join(parts[2:-2])
            if mount == self.mount and parts[-1] == self.role:
                if request.method not in ("GET", "POST", "PUT"):
                    return errors(405, "unsupported operation")
                return self._authorized(request) or self._issue(parts[-2])
        if self._authorized(request) is not None:
            # Vault checks the token before routing: no path discovery without one.
            return errors(403, "permission denied")
        return errors(404)

    def _authorized(self, request: RecordedRequest) -> Reply | None:
        """None when the request carries a valid token, else the 403 to send."""
        token = request.header("X-Vault-Token")
        bearer = request.header("Authorization")
        if token is None and bearer is not None and bearer.startswith("Bearer "):
            token = bearer[len("Bearer "):]
        with self._state_lock:
            valid = token is not None and token in self._tokens
        return None if valid else errors(403, "permission denied")

    def _login(self, request: RecordedRequest) -> Reply:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return errors(400, "failed to parse JSON input")
        if not isinstance(body, dict):
            return errors(400, "failed to parse JSON input")
        with self._state_lock:
            expected = self._approle
        if (body.get("role_id"), body.get("secret_id")) != expected:
            return errors(400, "invalid role or secret ID")
        token = f"hvs.fake-approle-{next(self._serial)}"
        with self._state_lock:
            self._tokens.add(token)
            self._login_tokens.append(token)
        return Reply.json(200, envelope(auth={
            "client_token": token,
            "accessor": f"accessor-{uuid.uuid4()}",
            "policies": ["default", "s3relay"],
            "token_policies": ["default", "s3relay"],
            "metadata": {"role_name": self.role},
            "lease_duration": self.token_ttl,
            "renewable": True,
            "entity_id": str(uuid.uuid4()),
            "token_type": "service",
            "orphan": True,
        }))

    def _issue(self, kind: str) -> Reply:
        with self._state_lock:
            creds = self._credentials
        lease_id = f"{self.mount}/{kind}/{self.role}/{uuid.uuid4().hex}"
        renewable = kind == "creds"
        if renewable:
            with self._state_lock:
                self.leases[lease_id] = creds.lease_duration
        return Reply.json(200, envelope(
            lease_id=lease_id,
            renewable=renewable,
            lease_duration=creds.lease_duration,
            data={
                "access_key": creds.access_key,
                "secret_key": creds.secret_key,
                "security_token": None if kind == "creds" else creds.security_token,
            },
        ))

    def _renew(self, request: RecordedRequest) -> Reply:
        if request.method not in ("PUT", "POST"):
            return errors(405, "unsupported operation")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return errors(400, "failed to parse JSON input")
        lease_id = body.get("lease_id") if isinstance(body, dict) else None
        with self._state_lock:
            duration = self.leases.get(str(lease_id))
        if duration is None:
            return errors(400, "lease not found")
        increment = body.get("increment")
        if isinstance(increment, int) and increment > 0:
            duration = min(duration, increment)
        return Reply.json(200, envelope(lease_id=lease_id, renewable=True,
                                        lease_duration=duration))

    def error_reply(self, status: int) -> Reply:
        messages = {
            401: "unauthorized",
            403: "permission denied",
            500: "internal error",
            503: "Vault is sealed",
        }
        return errors(status, messages.get(status, "error"))
