# -*- test-case-name: tests.unit.test_config -*-
"""One ini section, read key by key, and the error that locates a mistake in it.

Feature modules (limits, access rules, credential sources, TLS) parse their own
keys from a ``Section``; ``config`` assembles the results into one frozen value.
Pure: nothing here touches the network or Twisted.
"""

from __future__ import annotations

import os
from typing import Callable, Mapping


class ConfigError(Exception):
    """A configuration problem, located by section and key."""

    def __init__(self, section: str, key: str | None, message: str) -> None:
        where = (f"[{section}]" if section else "") + (f" {key}" if key else "")
        super().__init__(f"{where}: {message}" if where else message)
        self.section = section
        self.key = key


class Section:
    """One ini section, read key by key so that leftovers can be reported."""

    def __init__(self, name: str, items: Mapping[str, str], base_dir: str) -> None:
        self.name = name
        self._items = dict(items)
        self._base_dir = base_dir
        self._used: set[str] = set()

    @property
    def base_dir(self) -> str:
        """Where relative file names in this section resolve from (the config's directory)."""
        return self._base_dir

    def get(self, key: str, default: str | None = None) -> str:
        self._used.add(key)
        value = self._items.get(key, default)
        if value is None or value == "":
            if default is not None:
                return default
            raise ConfigError(self.name, key, "is required")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        """A ``yes``/``no`` key."""
        value = self.get(key, "yes" if default else "no")
        if value not in ("yes", "no"):
            raise ConfigError(self.name, key, "must be yes or no")
        return value == "yes"

    def optional(self, key: str) -> str | None:
        self._used.add(key)
        return self._items.get(key) or None

    def convert(self, key: str, default: str, parse: Callable[[str], float]) -> float:
        raw = self.get(key, default)
        try:
            value = parse(raw)
        except ValueError:
            raise ConfigError(self.name, key, f"{raw!r} is not a number") from None
        if not value > 0:  # NaN too
            raise ConfigError(self.name, key, "must be greater than 0")
        return value

    def read_file(self, key: str, path: str) -> bytes:
        """The bytes of the file ``path`` (relative to the config) named by ``key``."""
        path = os.path.join(self._base_dir, path)
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as e:
            raise ConfigError(self.name, key, f"cannot read {path}: {e.strerror}") from None
        except ValueError:  # a NUL in the name
            raise ConfigError(self.name, key, "is not a valid file name") from None

    def secret(self, key: str) -> str:
        """A secret given inline as ``key`` or in a file named by ``key_file``."""
        inline, path = self.optional(key), self.optional(f"{key}_file")
        if inline and path:
            raise ConfigError(self.name, key, f"give {key} or {key}_file, not both")
        if path:
            try:
                value = self.read_file(f"{key}_file", path).decode("utf-8").strip()
            except UnicodeDecodeError:
                raise ConfigError(self.name, f"{key}_file", f"{path} is not UTF-8 text") from None
            if not value:
                full = os.path.join(self._base_dir, path)
                raise ConfigError(self.name, f"{key}_file", f"{full} is empty")
            return value
        if inline:
            return inline
        raise ConfigError(self.name, key, f"is required (or {key}_file)")

    def check_unknown(self) -> None:
        for key in sorted(set(self._items) - self._used):
            raise ConfigError(self.name, key, "unknown key")


def names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


