"""Errors raised by the edge agent and its wire contract.

::

    AgentError                      base of everything the edge agent raises on purpose
    ├── ProtocolError (ValueError)  a payload or topic that breaks the wire contract
    └── ConfigError (ValueError)    a configuration that cannot run; names file, key and fix

Each error carries its details on attributes so that callers can count and log them without parsing the
message.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base class for the edge agent's own errors."""


class ProtocolError(AgentError, ValueError):
    """A topic or payload that does not follow the wire contract.

    ``problems`` lists ``(location, reason)`` pairs, e.g. ``("observations.0.value", "must be <= 100")``.
    """

    def __init__(self, message: str, *, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems: list[tuple[str, str]] = problems or []


class ConfigError(AgentError, ValueError):
    """A configuration that cannot be used. The message names the file, the key and the fix."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.key = key
