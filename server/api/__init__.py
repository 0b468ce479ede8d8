"""The WardWatch REST API (FastAPI), versioned under ``/api``.

::

    app.py        create_app(): routers, errors as JSON, security headers, CORS (off unless configured)
    actions.py    Actions: the writes other components implement (alert actions, commands, names)
    events.py     Broadcaster: live events for GET /api/events (server-sent events)
    security.py   bearer-token authentication, role checks, api_audit records, headers middleware
    context.py    ApiContext (what routes need), ApiError
    settings.py   ApiSettings
    schemas.py    request and response bodies
    views.py      rows -> response bodies
    routes/       patients, alerts, equipment (gateways), admin (dead letters, ingest, tokens, audit),
                  stream (events), health (/healthz, /readyz)

Tokens, roles and rate limiting live in ``server.auth``; read queries in ``server.queries``.
"""

from server.api.actions import (
    Actions,
    Actor,
    AlertActions,
    CommandNotSentError,
    DatabaseActions,
    NoGatewayError,
    UnknownPatientError,
)
from server.api.app import create_app
from server.api.context import API_PREFIX
from server.api.events import Broadcaster, LiveEvent
from server.api.settings import ApiSettings

__all__ = [
    "API_PREFIX",
    "Actions",
    "Actor",
    "AlertActions",
    "ApiSettings",
    "Broadcaster",
    "CommandNotSentError",
    "DatabaseActions",
    "LiveEvent",
    "NoGatewayError",
    "UnknownPatientError",
    "create_app",
]
