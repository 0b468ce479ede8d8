"""The FHIR export's one exception tree; the router answers each with an OperationOutcome.

::

    FhirError                  status, issue code, diagnostics, expression
     ├── InvalidSearchError    400 invalid / not-supported: a parameter is malformed or unknown
     │                         (FhirError itself with status 406: an Accept header without JSON)
     └── ResourceNotFoundError 404 not-found
"""

from __future__ import annotations


class FhirError(Exception):
    """An answer other than success, in FHIR terms."""

    status = 400
    issue_code = "invalid"

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: str | None = None,
        issue_code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression
        if issue_code is not None:
            self.issue_code = issue_code
        if status is not None:
            self.status = status


class InvalidSearchError(FhirError):
    status = 400
    issue_code = "invalid"


class ResourceNotFoundError(FhirError):
    status = 404
    issue_code = "not-found"
