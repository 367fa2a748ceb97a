"""botocore as an oracle: signing at a chosen time, across botocore versions."""

from __future__ import annotations

import contextlib
import datetime
import importlib
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace
from unittest import mock

import botocore.auth


def _signers() -> list[ModuleType]:
    """botocore's signing modules: its own, and the CRT one when awscrt is installed."""
    try:
        return [botocore.auth, importlib.import_module("botocore.crt.auth")]
    except ImportError:
        return [botocore.auth]


def _frozen(naive: datetime.datetime) -> SimpleNamespace:
    """The ``datetime`` module with ``datetime.utcnow()`` stopped at ``naive``."""

    class Stopped(datetime.datetime):
        @classmethod
        def utcnow(cls) -> Stopped:
            return cls.combine(naive.date(), naive.time())

    return SimpleNamespace(**{**vars(datetime), "datetime": Stopped})


@contextlib.contextmanager
def signing_at(when: datetime.datetime) -> Iterator[None]:
    """Make botocore sign at ``when``, with either of its signers."""
    aware = when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)
    aware = aware.astimezone(datetime.timezone.utc)

    def current(remove_tzinfo: bool = True) -> datetime.datetime:
        return aware.replace(tzinfo=None) if remove_tzinfo else aware

    with contextlib.ExitStack() as stack:
        for module in _signers():
            if hasattr(module, "get_current_datetime"):
                stack.enter_context(mock.patch.object(module, "get_current_datetime", current))
            else:
                # botocore before 1.33 (Debian bookworm's 1.29) reads datetime.datetime.utcnow().
                stack.enter_context(mock.patch.object(module, "datetime", _frozen(current())))
        yield
