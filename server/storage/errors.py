"""Errors raised by the server's storage layer.

::

    StorageError                    base of everything storage raises on purpose
    ├── StorageUnavailable          the database cannot be reached or stayed locked; retry later
    └── MigrationError              the schema could not be brought to the version this code needs

A caller that receives StorageUnavailable while handling an MQTT message must not acknowledge it: the
broker then delivers it again once the database is back.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class for the storage layer's own errors."""


class StorageUnavailable(StorageError):
    """The database did not answer, dropped the connection, or stayed locked through every attempt."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class MigrationError(StorageError):
    """Upgrading the schema failed; the message names the database (without password) and the cause."""
