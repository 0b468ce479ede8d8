"""FHIR R4 export of WardWatch data: vital signs, blood pressure panels, NEWS2, devices, patients and
alerts, as ``fhir.resources`` models and through a FastAPI router.

- :mod:`server.fhir.codes`    code systems, profiles and identifier systems, as tables
- :mod:`server.fhir.mapping`  pure functions: stored records in, validated FHIR resources out
- :mod:`server.fhir.search`   search parameters (date, code, _count, paging cursor), parsed and checked
- :mod:`server.fhir.reads`    the read-only database questions and the paging over them
- :mod:`server.fhir.router`   ``fhir_router()``: the REST endpoints under ``/fhir``
- :mod:`server.fhir.errors`   the exception tree (answered as OperationOutcome)

The models come from ``fhir.resources.R4B`` (FHIR 4.3.0): version 8 of ``fhir.resources`` has no R4
(4.0.1) package, and R4B left every resource used here as it was in R4. docs/fhir.md has the mapping.
"""

from server.fhir.router import FhirSettings, fhir_router

__all__ = ["FhirSettings", "fhir_router"]
