"""Targets for the server's ingest (``server.ingest.Ingestor``) on a real database: SQLite (a file) and
PostgreSQL (a scratch database created on the server named by ``--database-url``).

Each case is one to three messages for the gateway channels, ingested one by one (``ingest``) or in one
transaction (``ingest_many``): valid messages from ``wire_documents``, replays of them, their payloads
mutated (JSON structure, bytes, deep nesting, arbitrary bytes) and their topics mutated.

Oracle ("nothing half-written"), after every case: the outcome of each message is stored, duplicate,
stale or a dead letter with a reason and a detail, never ``internal_error`` (a server bug) or
``storage_rejected`` (the contract let through what the schema refuses); a valid message on its own
topic is never dead-lettered (except a command acknowledgement for a command never sent:
``unknown_command``); the tables hold exactly what the outcomes say (a ledger counts the rows expected in
dead_letters, received_messages, observations, assessments, gateway_events, gateways and patients, and
the newest dead letters carry this case's reasons); the counters add up (received = stored + duplicates
+ stale + dead letters). Every ``CHECK_EVERY`` cases and at the end: the dedup ledger is exactly the ids
stored, and per gateway the sequence bookkeeping is exact (highest_seq is the highest stored number, no
open gap contains a stored number, stored numbers plus open gaps cover 0..highest_seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.fuzz import wire_documents as docs
from bench.fuzz.harness import Check, Target, require
from bench.fuzz.mutation import hostile_json_bytes, random_bytes
from bench.fuzz.targets_agent import scratch_directory
from edge_agent import protocol
from server.ingest import DeadLetterReason, Ingestor, IngestOutcome, OutcomeKind
from server.storage import create_engine, migrate, repository, session_factory

FANOUT = 10
CHECK_EVERY = 2000
POSTGRES_ADMIN_URL = os.environ.get(
    "WARDWATCH_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
INGEST_CHANNELS = ("status", "obs", "score", "event", "cmd-ack")
COMMANDS_PER_GATEWAY = 3
RECEIVED_AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def command_ids(gateway: str) -> tuple[str, ...]:
    """Ids of the commands seeded as sent to ``gateway`` (acks for them can be stored)."""
    return tuple(
        docs.uuid7(uuid.uuid5(uuid.NAMESPACE_URL, f"{gateway}/{n}").int >> 6)
        for n in range(COMMANDS_PER_GATEWAY)
    )


@dataclass(frozen=True)
class Delivery:
    topic: str
    raw: bytes
    valid: bool

    def __repr__(self) -> str:
        return f"Delivery(topic={self.topic!r}, raw={self.raw[:2000]!r}, valid={self.valid})"


@dataclass(frozen=True)
class IngestCase:
    batched: bool
    deliveries: tuple[Delivery, ...]


@st.composite
def valid_delivery(draw: st.DrawFn) -> Delivery:
    channel = draw(st.sampled_from(INGEST_CHANNELS))
    gateway = draw(st.sampled_from(docs.GATEWAYS))
    if channel == "cmd-ack":
        document = draw(docs.command_ack(gateway, command_ids(gateway)))
    else:
        document = draw(docs.BUILDERS[channel](gateway))
    return Delivery(protocol.gateway_topic(gateway, channel), json.dumps(document).encode(), True)


ingest_cases = st.builds(
    IngestCase, st.booleans(), st.lists(valid_delivery(), min_size=1, max_size=3).map(tuple)
)


def _mutated_topic(topic: str, rnd: random.Random) -> str:
    choice = rnd.randrange(6)
    levels = topic.split("/")
    if choice == 0:
        levels[3] = rnd.choice(docs.GATEWAYS)  # another gateway's topic: gateway_mismatch
    elif choice == 1:
        levels[4] = rnd.choice(["cmd", "receipt", "obs", "score", "event", "status", "cmd-ack", "nope"])
    elif choice == 2:
        levels.append(rnd.choice(["x", "set_oxygen", ""]))
    elif choice == 3:
        levels[3] = rnd.choice(["", "+", "#", "a/b", "x" * 65, "gw\x00", "gw\udcff"])
    elif choice == 4:
        return "".join(chr(rnd.randint(0, 0x2FF)) for _ in range(rnd.randint(0, 40)))
    else:
        return topic[: rnd.randint(0, len(topic))]
    return "/".join(levels)


def _fresh(delivery: Delivery, rnd: random.Random) -> Delivery:
    document = json.loads(delivery.raw)
    if "message_id" in document:
        document["message_id"] = docs.uuid7(rnd.getrandbits(122))
    if "seq" in document:
        document["seq"] = rnd.randint(0, 200) if rnd.random() < 0.9 else rnd.getrandbits(63)
    if "session" in document:
        document["session"] = rnd.randint(1, 20)
    return Delivery(delivery.topic, json.dumps(document).encode(), True)


def derive_case(case: IngestCase, rnd: random.Random) -> IngestCase:
    out = []
    for delivery in case.deliveries:
        choice = rnd.randrange(10)
        if choice < 1:  # replayed as is (a duplicate once the first copy is stored)
            out.append(delivery)
        elif choice < 3 and delivery.valid:  # a new valid message like it (new id, sequence, session)
            out.append(_fresh(delivery, rnd))
        elif choice < 7:
            document = json.loads(delivery.raw)
            out.append(Delivery(delivery.topic, hostile_json_bytes(document, rnd), False))
        elif choice < 9:
            out.append(Delivery(_mutated_topic(delivery.topic, rnd), delivery.raw, False))
        else:
            out.append(Delivery(delivery.topic, random_bytes(rnd, 300), False))
    rnd.shuffle(out)
    return IngestCase(rnd.random() < 0.5, tuple(out))


@dataclass
class Ledger:
    """What the tables must hold, from the outcomes so far."""

    dead_letters: Counter[str] = field(default_factory=Counter)
    claimed: set[uuid.UUID] = field(default_factory=set)
    observations: int = 0
    assessments: int = 0
    events: int = 0
    gateways: set[str] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)
    seqs: dict[str, set[int]] = field(default_factory=dict)
    acked_commands: set[uuid.UUID] = field(default_factory=set)


def _record(ledger: Ledger, delivery: Delivery, outcome: IngestOutcome, batch_ids: set[uuid.UUID]) -> str:
    kind = outcome.kind
    if kind is OutcomeKind.DEAD_LETTER:
        reason = outcome.reason
        require(reason is not None and outcome.detail, f"dead letter without reason or detail: {outcome}")
        assert reason is not None
        require(
            reason not in (DeadLetterReason.INTERNAL_ERROR, DeadLetterReason.STORAGE_REJECTED),
            f"{reason.value}: {outcome.detail}",
        )
        require(
            not delivery.valid or reason is DeadLetterReason.UNKNOWN_COMMAND,
            f"valid message dead-lettered ({reason.value}): {outcome.detail}",
        )
        ledger.dead_letters[reason.value] += 1
        return f"dead letter: {reason.value}"
    message = outcome.message
    require(message is not None and outcome.gateway_id is not None, f"outcome without message: {outcome}")
    assert message is not None and outcome.gateway_id is not None
    ledger.gateways.add(outcome.gateway_id)
    message_id = getattr(message, "message_id", None)
    if kind is OutcomeKind.STALE:
        require(isinstance(message, protocol.GatewayStatus), f"stale {type(message).__name__}")
        return "stale"
    if kind is OutcomeKind.DUPLICATE:
        if isinstance(message, protocol.GatewayStatus):
            raise AssertionError("a status reported as duplicate")
        assert isinstance(message_id, uuid.UUID)
        if isinstance(message, protocol.CommandAck) and "already acknowledged" in outcome.detail:
            require(message_id not in ledger.claimed, "a replayed ack reported as 'already acknowledged'")
            require(message.command_id in ledger.acked_commands, "ack of an unacknowledged command refused")
            ledger.claimed.add(message_id)
            return "duplicate (command already acknowledged)"
        if message_id in ledger.claimed:
            return "duplicate"
        require(message_id in batch_ids, f"duplicate of unseen {message_id}")
        return "duplicate (id stored by another message of the batch)"
    # stored
    if isinstance(message, protocol.GatewayStatus):
        return "stored: status"
    assert isinstance(message_id, uuid.UUID)
    require(message_id not in ledger.claimed, f"message {message_id} stored twice")
    ledger.claimed.add(message_id)
    if isinstance(message, protocol.CommandAck):
        require(message.command_id not in ledger.acked_commands, "a command acknowledged twice")
        ledger.acked_commands.add(message.command_id)
        return "stored: cmd-ack"
    assert isinstance(message, protocol.SequencedMessage)
    ledger.seqs.setdefault(outcome.gateway_id, set()).add(message.seq)
    if isinstance(message, protocol.ObservationBatch):
        ledger.observations += len(message.observations)
        ledger.patients.update(o.patient_id for o in message.observations)
        return "stored: obs"
    if isinstance(message, protocol.Assessment):
        ledger.assessments += 1
        ledger.patients.add(message.patient_id)
        return "stored: score"
    assert isinstance(message, protocol.Event)
    ledger.events += 1
    patient = repository.event_patient(message)
    if patient is not None:
        ledger.patients.add(patient)
    return "stored: event"


_TOTALS = text(
    "SELECT (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM received_messages),"
    " (SELECT count(*) FROM observations), (SELECT count(*) FROM assessments),"
    " (SELECT count(*) FROM gateway_events), (SELECT count(*) FROM gateways),"
    " (SELECT count(*) FROM patients)"
)
_NEWEST_DEAD = text("SELECT reason, detail FROM dead_letters ORDER BY id DESC LIMIT :n")


class IngestBench:
    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(url)
        self.sessions = session_factory(self.engine)
        self.ingestor = Ingestor(self.sessions, retry_delay_s=0.001)
        self.ledger = Ledger()
        self.cases = 0
        self.loop.run_until_complete(self._seed())

    async def _seed(self) -> None:
        """Commands sent to each gateway (so some acknowledgements can be stored); their gateways and
        patients exist from the start."""
        async with self.sessions() as session, session.begin():
            for gateway in docs.GATEWAYS:
                await repository.lock_gateway(session, gateway, received_at=RECEIVED_AT)
                await repository.ensure_patients(
                    session, ["pt-0001"], gateway_id=gateway, received_at=RECEIVED_AT
                )
                for command_id in command_ids(gateway):
                    command = protocol.Command(
                        message_id=uuid.UUID(command_id),
                        gateway_id=gateway,
                        patient_id="pt-0001",
                        issued_at=RECEIVED_AT,
                        issued_by="fuzz",
                        body=protocol.SetOxygen(command="set_oxygen", on_oxygen=True),
                    )
                    await repository.record_command(session, command)
        self.ledger.gateways.update(docs.GATEWAYS)
        self.ledger.patients.add("pt-0001")

    def close(self) -> None:
        self.loop.run_until_complete(self.engine.dispose())
        self.loop.close()

    def finish(self) -> None:
        self.loop.run_until_complete(self.check_sequences())

    def __call__(self, case: IngestCase) -> list[str]:
        """The outcome of each message of the case (the runner counts messages, not cases)."""
        return self.loop.run_until_complete(self._check(case))

    async def _check(self, case: IngestCase) -> list[str]:
        messages = [(d.topic, d.raw) for d in case.deliveries]
        if case.batched:
            outcomes = await self.ingestor.ingest_many(messages, RECEIVED_AT)
        else:
            outcomes = [await self.ingestor.ingest(topic, raw, RECEIVED_AT) for topic, raw in messages]
        require(len(outcomes) == len(messages), "an outcome per message")
        # Ids this case stored. ingest_many stores a batch's obs/score/event before its status and
        # cmd-ack messages, so a cmd-ack can be the duplicate of a message later in the list that shares
        # its id (a hostile gateway reusing an id across channels; one by one, the first would win).
        # (Also across gateways: ingest_many stores a batch gateway by gateway.) An ack of a command
        # that already had one also takes its id.
        batch_ids = {
            outcome.message.message_id  # type: ignore[union-attr]
            for outcome in outcomes
            if hasattr(outcome.message, "message_id")
            and (
                outcome.kind is OutcomeKind.STORED
                or (outcome.kind is OutcomeKind.DUPLICATE and "already acknowledged" in outcome.detail)
            )
        }
        labels = []
        dead = []
        for delivery, outcome in zip(case.deliveries, outcomes, strict=True):
            labels.append(_record(self.ledger, delivery, outcome, batch_ids))
            if outcome.kind is OutcomeKind.DEAD_LETTER:
                dead.append((outcome.reason.value if outcome.reason else None, outcome.detail))
        ledger = self.ledger
        async with self.engine.connect() as connection:
            totals = tuple((await connection.execute(_TOTALS)).one())
            newest = (
                [tuple(row) for row in await connection.execute(_NEWEST_DEAD, {"n": len(dead)})]
                if dead
                else []
            )
        expected = (
            sum(ledger.dead_letters.values()),
            len(ledger.claimed),
            ledger.observations,
            ledger.assessments,
            ledger.events,
            len(ledger.gateways),
            len(ledger.patients),
        )
        names = (
            "dead_letters",
            "received_messages",
            "observations",
            "assessments",
            "gateway_events",
            "gateways",
            "patients",
        )
        for name, got, want in zip(names, totals, expected, strict=True):
            require(got == want, f"{name}: the table holds {got} rows, the outcomes say {want}")
        require(
            sorted(reason for reason, _ in newest) == sorted(reason for reason, _ in dead),
            f"newest dead letters {newest} are not this case's {dead}",
        )
        counters = self.ingestor.counters
        accounted = (
            sum(counters.stored.values())
            + counters.duplicates
            + counters.stale_statuses
            + sum(counters.dead_letters.values())
        )
        require(counters.received == accounted, f"received {counters.received} != accounted {accounted}")
        require(counters.observations_stored == ledger.observations, "observations_stored counter")
        require(dict(+counters.dead_letters) == dict(+ledger.dead_letters), "dead letter counters by reason")
        self.cases += 1
        if self.cases % CHECK_EVERY == 0:
            await self.check_sequences()
        return labels

    async def check_sequences(self) -> None:
        ledger = self.ledger
        async with self.engine.connect() as connection:
            ids = {
                row[0] for row in await connection.execute(text("SELECT message_id FROM received_messages"))
            }
            highest = dict(
                tuple(row)
                for row in await connection.execute(text("SELECT gateway_id, highest_seq FROM gateways"))
            )
            gaps = [
                tuple(row)
                for row in await connection.execute(
                    text(
                        "SELECT gateway_id, first_missing, last_missing FROM sequence_gaps"
                        " WHERE filled_at IS NULL"
                    )
                )
            ]
        ids = {value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)) for value in ids}
        require(ids == ledger.claimed, f"dedup ledger differs: {len(ids ^ ledger.claimed)} ids")
        for gateway, stored in ledger.seqs.items():
            top = highest.get(gateway)
            require(top == max(stored), f"{gateway}: highest_seq {top}, highest stored {max(stored)}")
            own = sorted((first, last) for g, first, last in gaps if g == gateway)
            covered = 0
            previous_last = -1
            for first, last in own:
                require(
                    0 <= first <= last <= top and first > previous_last, f"{gateway}: gap {first}..{last}"
                )
                previous_last = last
                covered += last - first + 1
            for seq in stored:  # no stored number inside an open gap (bisect over the sorted gaps)
                index = _bisect(own, seq)
                require(index < 0 or not own[index][0] <= seq <= own[index][1], f"{gateway}: {seq} in a gap")
            require(
                covered + len(stored) == top + 1,
                f"{gateway}: gaps + stored cover {covered + len(stored)}, not 0..{top}",
            )


def _bisect(ranges: list[tuple[int, int]], value: int) -> int:
    """Index of the last range starting at or before ``value`` (-1 when none)."""
    low, high = 0, len(ranges)
    while low < high:
        middle = (low + high) // 2
        if ranges[middle][0] <= value:
            low = middle + 1
        else:
            high = middle
    return low - 1


def _describe(case: IngestCase) -> str:
    how = "ingest_many" if case.batched else "ingest one by one"
    return f"{how}: " + "; ".join(repr(d) for d in case.deliveries)


@contextlib.contextmanager
def _sqlite_target() -> Iterator[Check]:
    with scratch_directory() as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'ingest.db'}"
        asyncio.run(migrate(url))
        bench = IngestBench(url)
        try:
            yield bench
        finally:
            bench.close()


async def _admin(admin_url: str, statement: str) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def _postgres_target(admin_url: str) -> Any:
    @contextlib.contextmanager
    def opened() -> Iterator[Check]:
        name = f"wardwatch_fuzz_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        try:
            asyncio.run(migrate(url))
            bench = IngestBench(url)
            try:
                yield bench
            finally:
                bench.close()
        finally:
            asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return opened


def targets(database_url: str | None = None) -> list[Target]:
    common: dict[str, Any] = {
        "group": "ingest",
        "strategy": ingest_cases,
        "describe": _describe,
        "stateless": False,
        "derive": derive_case,
        "fanout": FANOUT,
    }
    return [
        Target("ingest_sqlite", open=_sqlite_target, doc="Ingestor on a SQLite file", **common),
        Target(
            "ingest_postgresql",
            open=_postgres_target(database_url or POSTGRES_ADMIN_URL),
            doc="Ingestor on a scratch PostgreSQL database",
            **common,
        ),
    ]
