"""botocore as an oracle: signing at a chosen time, across botocore versions."""

from __future__ import annotations

import datetime
from typing import Any
from unittest import mock

import botocore.auth


def signing_at(when: datetime.datetime) -> Any:
    """Make botocore sign at ``when`` (a context manager)."""
    naive = when.astimezone(datetime.timezone.utc).replace(tzinfo=None) if when.tzinfo else when
    if hasattr(botocore.auth, "get_current_datetime"):
        return mock.patch.object(botocore.auth, "get_current_datetime", return_value=naive)
    # botocore before 1.33 (Debian bookworm's 1.29) reads datetime.datetime.utcnow().
    clock = mock.Mock(wraps=datetime)
    clock.datetime = mock.Mock(wraps=datetime.datetime)
    clock.datetime.utcnow.return_value = naive
    return mock.patch.object(botocore.auth, "datetime", clock)
