"""moto as ``moto_keepalive`` runs it, with AssumeRoleWithWebIdentity public as on AWS.

With IAM enforcement on, moto wants every call signed, but AWS's
AssumeRoleWithWebIdentity is unsigned: the token is the proof.  This
process lets that one action through unsigned and, when
``MOTO_WEB_IDENTITY_TOKENS`` names a file, accepts only the tokens listed in
it (one a line, re-read per call), so a test can refuse a relay's token and
later accept it.  Usage: ``python -m tests.moto_sts HOST PORT``.
"""

from __future__ import annotations

import os
from typing import Any

from moto.core.authorization import ActionAuthenticatorMixin
from moto.core.exceptions import _RESTError

from tests import moto_keepalive


class InvalidIdentityToken(_RESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__("InvalidIdentityToken", "The web identity token is not accepted.")


def _accepted(token: str) -> bool:
    path = os.environ.get("MOTO_WEB_IDENTITY_TOKENS")
    if not path:
        return True
    try:
        with open(path, encoding="utf-8") as handle:
            return token in {line.strip() for line in handle if line.strip()}
    except OSError:
        return False


def _patch() -> None:
    original = ActionAuthenticatorMixin._authenticate_and_authorize_normal_action

    def check(self: Any, resource: str = "*") -> None:
        if self._get_action() == "AssumeRoleWithWebIdentity":
            if not _accepted(self._get_param("WebIdentityToken") or ""):
                raise InvalidIdentityToken()
            return
        original(self, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = check  # type: ignore[method-assign]


if __name__ == "__main__":
    _patch()
    moto_keepalive.main()
