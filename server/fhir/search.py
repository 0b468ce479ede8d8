"""Search parameters of the FHIR export, parsed and checked without touching the database.

Dates follow the FHIR search rules: a value stands for the whole range of its precision
(``2026-03-01`` is that day, ``2026-03-01T10:00:00Z`` that second), and the prefixes compare the
reading's instant with that range: ``eq`` inside it, ``ge``/``le`` from its start / to its end, ``gt``/``sa``
after its end, ``lt``/``eb`` before its start. Several ``date`` parameters must all hold. A value with a
time must carry a zone; a bare date is read in UTC. ``ne`` and ``ap`` are refused (400), as is any
parameter this server does not implement, so a client never believes it filtered when it did not.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from edge_agent.protocol import VitalCode
from server.fhir import codes
from server.fhir.errors import InvalidSearchError

_DATE: Final = re.compile(
    r"^(?P<prefix>eq|ne|gt|lt|ge|le|sa|eb|ap)?"
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_PREFIX_ALIASES: Final = {"sa": "gt", "eb": "lt", None: "eq"}


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Readings with ``start <= time < end`` (either bound may be open)."""

    start: datetime | None = None
    end: datetime | None = None

    def narrowed(self, start: datetime | None, end: datetime | None) -> TimeWindow:
        new_start = self.start if start is None or (self.start is not None and self.start >= start) else start
        new_end = self.end if end is None or (self.end is not None and self.end <= end) else end
        return TimeWindow(new_start, new_end)

    @property
    def empty(self) -> bool:
        return self.start is not None and self.end is not None and self.start >= self.end


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.month - 1 + months
    return moment.replace(year=moment.year + total // 12, month=total % 12 + 1)


def date_range(text: str, *, parameter: str = "date") -> tuple[str, datetime, datetime]:
    """``(prefix, start, end)`` of one date parameter value: the prefix (eq when absent, sa as gt, eb as
    lt) and the half-open range ``[start, end)`` that the value's precision covers."""
    match = _DATE.match(text)
    if match is None:
        raise InvalidSearchError(
            f"{parameter}={text!r} is not a FHIR date (e.g. ge2026-03-01 or lt2026-03-01T10:00:00Z)",
            expression=parameter,
        )
    prefix = match["prefix"]
    if prefix in ("ne", "ap"):
        raise InvalidSearchError(
            f"{parameter}: the prefix {prefix!r} is not supported (use eq, ge, gt, le, lt, sa, eb)",
            expression=parameter,
            issue_code="not-supported",
        )
    prefix = _PREFIX_ALIASES.get(prefix, prefix)
    if match["hour"] is not None and match["zone"] is None:
        raise InvalidSearchError(
            f"{parameter}={text!r} has a time but no zone; add Z or an offset such as +01:00",
            expression=parameter,
        )
    try:
        offset = timedelta(0)
        if match["zone"] not in (None, "Z"):
            sign = 1 if match["zone"][0] == "+" else -1
            offset = timedelta(hours=int(match["zone"][1:3]), minutes=int(match["zone"][4:6])) * sign
        fraction = match["fraction"] or ""
        start = datetime(
            int(match["year"]),
            int(match["month"] or 1),
            int(match["day"] or 1),
            int(match["hour"] or 0),
            int(match["minute"] or 0),
            int(match["second"] or 0),
            int(fraction[:6].ljust(6, "0")) if fraction else 0,
            tzinfo=UTC,
        )
        start -= offset
        end = _range_end(start, match, fraction)
    except (ValueError, OverflowError) as exc:
        raise InvalidSearchError(
            f"{parameter}={text!r} is not a valid date: {exc}", expression=parameter
        ) from None
    return prefix, start, end


def _range_end(start: datetime, match: re.Match[str], fraction: str) -> datetime:
    if match["month"] is None:
        return start.replace(year=start.year + 1)
    if match["day"] is None:
        return _add_months(start, 1)
    if match["hour"] is None:
        return start + timedelta(days=1)
    if match["second"] is None:
        return start + timedelta(minutes=1)
    if not fraction:
        return start + timedelta(seconds=1)
    return start + timedelta(microseconds=10 ** max(0, 6 - len(fraction)))


def time_window(values: Iterable[str], *, parameter: str = "date") -> TimeWindow:
    """The window that every ``date`` value of a search allows."""
    window = TimeWindow()
    for value in values:
        prefix, start, end = date_range(value, parameter=parameter)
        if prefix == "eq":
            window = window.narrowed(start, end)
        elif prefix == "ge":
            window = window.narrowed(start, None)
        elif prefix == "gt":
            window = window.narrowed(end, None)
        elif prefix == "le":
            window = window.narrowed(None, end)
        else:  # lt
            window = window.narrowed(None, start)
    return window


# --------------------------------------------------------------------------------------------------
# code


@dataclass(frozen=True, slots=True)
class CodeFilter:
    """The ``code`` tokens of a search (any may match): (system or None for any system, code)."""

    tokens: tuple[tuple[str | None, str], ...]

    def matches(self, codings: Iterable[tuple[str, str]]) -> bool:
        pairs = list(codings)
        return any(
            code == token_code and (token_system is None or system == token_system)
            for token_system, token_code in self.tokens
            for system, code in pairs
        )


def parse_codes(values: Sequence[str]) -> CodeFilter | None:
    """``code=[system|]code[,…]``, repeated parameters AND-ed would need one resource to have two codes,
    which none of ours has; so this server takes one ``code`` parameter (commas for OR)."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidSearchError(
            "give one code parameter; separate alternatives with commas (code=8867-4,9279-1)",
            expression="code",
            issue_code="not-supported",
        )
    tokens: list[tuple[str | None, str]] = []
    for token in values[0].split(","):
        system, bar, code = token.partition("|")
        if not bar:
            system, code = "", token
        if not code.strip():
            raise InvalidSearchError(f"code token {token!r} has no code", expression="code")
        tokens.append((system or None, code.strip()))
    return CodeFilter(tuple(tokens))


def _vital_codes(vital: VitalCode) -> set[tuple[str, str]]:
    """Codes of the resources a reading of ``vital`` can end up in."""
    if vital in (VitalCode.SYSTOLIC_BP, VitalCode.DIASTOLIC_BP):
        return {(codes.LOINC, codes.BLOOD_PRESSURE_PANEL[0])}
    loinc = codes.loinc_of(vital)[0]
    found = {(codes.LOINC, loinc)}
    if vital is VitalCode.MEAN_ARTERIAL_PRESSURE:
        found.add((codes.LOINC, codes.BLOOD_PRESSURE_PANEL[0]))
    found.update((codes.LOINC, code) for code, _ in codes.VITAL_MAPPINGS[vital].extra_codings)
    return found


def vitals_for(code_filter: CodeFilter | None) -> tuple[list[VitalCode], bool]:
    """Which stored vitals to read, and whether to read NEWS2 assessments, for a code filter."""
    if code_filter is None:
        return list(VitalCode), True
    vitals = [vital for vital in VitalCode if code_filter.matches(_vital_codes(vital))]
    if any(vital in codes.BLOOD_PRESSURE_VITALS for vital in vitals):
        # A panel is built from all three; reading only some would turn a paired MAP into a lone one.
        vitals = [vital for vital in VitalCode if vital in vitals or vital in codes.BLOOD_PRESSURE_VITALS]
    news2 = code_filter.matches([(codes.SNOMED, codes.NEWS2_TOTAL[0])])
    return vitals, news2


# --------------------------------------------------------------------------------------------------
# paging


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last resource's (effectiveDateTime, id)."""

    time: datetime
    resource_id: str

    def encode(self) -> str:
        raw = json.dumps([self.time.astimezone(UTC).isoformat(), self.resource_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            moment, resource_id = json.loads(raw)
            time = datetime.fromisoformat(moment)
            if time.tzinfo is None or not isinstance(resource_id, str):
                raise ValueError("cursor fields")
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
            raise InvalidSearchError(
                "_cursor is not one this server issued; follow the Bundle's next link", expression="_cursor"
            ) from None
        return cls(time.astimezone(UTC), resource_id)


def page_size(values: Sequence[str], *, default: int, maximum: int) -> int:
    """``_count``: at most ``maximum`` (a larger request gets ``maximum``, as FHIR allows)."""
    if not values:
        return default
    if len(values) > 1:
        raise InvalidSearchError("give _count once", expression="_count")
    try:
        count = int(values[0])
    except ValueError:
        raise InvalidSearchError(f"_count={values[0]!r} is not a whole number", expression="_count") from None
    if count < 1:
        raise InvalidSearchError("_count must be at least 1", expression="_count", issue_code="not-supported")
    return min(count, maximum)
