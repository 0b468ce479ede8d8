"""``wardwatch demo``: the whole system on one machine, from nothing.

::

    wardwatch demo [--homes 5] [--speed 20] [--duration S] [--http-port 8080] [--broker URL]
                   [--api-token T] [--state-dir .demo]

1. A broker: ``--broker mqtt://host:port`` (MQTT 5), or else a private Mosquitto child process (Debian's
   ``mosquitto``; ``make demo`` installs it) on a free loopback port, configured in the state directory, or,
   when no ``mosquitto`` is installed, an embedded amqtt broker inside this process on a free loopback port
   (``server.embedded_broker``: MQTT 3.1.1, no shared subscriptions, nothing kept on disk). Mosquitto is
   looked for on ``PATH`` and in /usr/sbin and /usr/local/sbin, or only in the directories that
   ``WARDWATCH_DEMO_MOSQUITTO_PATH`` lists (``os.pathsep``-separated). The demo says which broker it uses.
2. One server worker (``server.process.run_worker``) on SQLite in the state directory, its REST API on
   ``--http-port``. An API token is created (role nurse) and printed with the URL; ``--api-token`` makes
   that token valid instead (it must look like ``ww_<12 hex>_<secret>``).
3. ``--homes`` simulated homes (``simulators.home.run_home``): each a real edge agent with its own outbox,
   reading simulated devices that speak the real protocols, following a patient scenario. The mix always
   starts with a deteriorating patient (sepsis).

Simulated time runs ``--speed`` times faster than real time, so hours of a patient's course pass in
minutes; the escalation policy's acknowledgement and re-notify timeouts are divided by the same factor (at
least 5 s) so that escalations are visible too. Ctrl-C (or ``--duration`` seconds) stops everything:
homes first, then the server, then the broker; a summary of what was stored is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent.backoff import Backoff
from edge_agent.mqtt import MqttVersion
from server.escalation import EscalationPolicy
from simulators.clock import SimClock

if TYPE_CHECKING:
    from server.process import ServerRuntime

logger = logging.getLogger(__name__)

SCENARIO_MIX: Final = ("sepsis", "stable", "copd", "battery_drain", "bleed", "disconnects", "af_fast")
"""Scenarios given to the homes in turn; the first is always a deteriorating patient."""
START_HOUR: Final = {"sepsis": 15.0}
"""Where in its course a scenario starts (hours), so the demo shows deterioration within minutes."""
SYSTEM_BINARY_DIRS: Final = ("/usr/sbin", "/usr/local/sbin")
"""Where Debian installs mosquitto; often not on a non-root user's PATH, so searched as well."""
MOSQUITTO_PATH_VARIABLE: Final = "WARDWATCH_DEMO_MOSQUITTO_PATH"
"""Directories to search for mosquitto instead of PATH and SYSTEM_BINARY_DIRS (an empty value: none)."""


class DemoError(Exception):
    """The demo cannot start (no broker at all, a port in use, a malformed token)."""


class DemoBroker(NamedTuple):
    url: str
    protocol_version: MqttVersion
    description: str
    """What the demo prints: which broker it is and where it runs."""


def register_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run broker, server and simulated homes together on this machine",
        description=(
            "Start a private Mosquitto (unless --broker; an embedded amqtt broker when mosquitto is not "
            "installed), a server on SQLite and N simulated homes; print the page URL and a token. Ctrl-C "
            "(or --duration) stops everything."
        ),
        epilog=(
            f"mosquitto is looked for on PATH and in {', '.join(SYSTEM_BINARY_DIRS)}; "
            f"{MOSQUITTO_PATH_VARIABLE} replaces that search path (set it empty to use the embedded broker)."
        ),
    )
    parser.add_argument("--homes", type=int, default=5, help="simulated homes (default 5)")
    parser.add_argument(
        "--speed",
        type=float,
        default=20.0,
        help="simulated seconds per real second (default 20; continuous oximeters lag at much more)",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after this many real seconds")
    parser.add_argument("--http-port", type=int, default=8080, help="REST API port (0: any free port)")
    parser.add_argument(
        "--broker",
        default=None,
        help="use this MQTT 5 broker (mqtt://host:port) instead of a private Mosquitto or embedded amqtt",
    )
    parser.add_argument("--api-token", default=None, help="make this token (ww_<12 hex>_<secret>) valid")
    parser.add_argument(
        "--state-dir", type=Path, default=Path(".demo"), help="where the demo keeps its files"
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if not 1 <= args.homes <= 200:
        print("wardwatch demo: --homes must be between 1 and 200", file=sys.stderr)
        return 2
    if not 0.1 <= args.speed <= 10_000:
        print("wardwatch demo: --speed must be between 0.1 and 10000", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration <= 0:
        print("wardwatch demo: --duration must be positive", file=sys.stderr)
        return 2
    try:
        return asyncio.run(
            run_demo(
                homes=args.homes,
                speed=args.speed,
                duration_s=args.duration,
                http_port=args.http_port,
                broker_url=args.broker,
                api_token=args.api_token,
                state_dir=args.state_dir.resolve(),
            )
        )
    except DemoError as exc:
        print(f"wardwatch demo: {exc}", file=sys.stderr)
        return 1


def _prepare_state_dir(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# wardwatch demo state: never committed\n*\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# The private broker


def find_mosquitto() -> str | None:
    """The mosquitto binary: on PATH or in SYSTEM_BINARY_DIRS, or in the directories that
    WARDWATCH_DEMO_MOSQUITTO_PATH lists when it is set; None when there is none."""
    search = os.environ.get(MOSQUITTO_PATH_VARIABLE)
    if search is None:
        search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SYSTEM_BINARY_DIRS])
    if not search:
        return None
    return shutil.which("mosquitto", path=search)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def demo_broker(state_dir: Path, given_url: str | None) -> AsyncIterator[DemoBroker]:
    """The broker the demo uses: the one given, else a private Mosquitto, else an embedded amqtt."""
    if given_url is not None:
        yield DemoBroker(given_url, "5", f"{given_url} (given with --broker, MQTT 5)")
        return
    binary = find_mosquitto()
    if binary is not None:
        async with private_broker(state_dir, binary) as (url, pid):
            yield DemoBroker(url, "5", f"{url} (private Mosquitto {binary}, pid {pid}, MQTT 5)")
        return
    try:
        from server.embedded_broker import PROTOCOL_VERSION, embedded_broker
    except ImportError as exc:
        raise DemoError(
            f"no broker: Debian's 'mosquitto' is not installed and the embedded broker cannot load ({exc}); "
            "install either (make demo installs both: `apt-get install mosquitto`, "
            "`pip install 'wardwatch[demo]'`) or give --broker"
        ) from exc
    async with embedded_broker() as url:
        yield DemoBroker(
            url,
            PROTOCOL_VERSION,
            f"{url} (embedded amqtt in this process, MQTT {PROTOCOL_VERSION}: mosquitto is not installed)",
        )


@contextlib.asynccontextmanager
async def private_broker(state_dir: Path, binary: str) -> AsyncIterator[tuple[str, int]]:
    """A Mosquitto child process on a free loopback port; yields its URL and pid, stops it on leaving."""
    port = _free_port()
    workdir = state_dir / "mosquitto"
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 100000\n"
        "log_dest stderr\n"
        "log_type error\n"
        "log_type warning\n",
        encoding="utf-8",
    )
    log = (workdir / "mosquitto.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        binary, "-c", str(config), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        await _wait_listening(port, process)
        logger.info("private broker (mosquitto pid %d) on 127.0.0.1:%d", process.pid, port)
        yield f"mqtt://127.0.0.1:{port}", process.pid
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


async def _wait_listening(port: int, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(10):
        while True:
            if process.returncode is not None:
                raise DemoError(
                    f"mosquitto exited with status {process.returncode} (see its log in the state dir)"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


# --------------------------------------------------------------------------------------------------
# Token, homes, summary


async def _api_token(sessions: async_sessionmaker[AsyncSession], given: str | None) -> str:
    from server.auth import DEFAULT_KDF, ApiToken, hash_secret, parse_token

    if given is None:
        from server.auth import create_token

        return await create_token(sessions, "nurse", "demo-nurse", created_by="demo")
    parsed = parse_token(given)
    if parsed is None:
        raise DemoError("--api-token must look like ww_<12 hex digits>_<secret>")
    async with sessions() as session, session.begin():
        existing = await session.scalar(select(ApiToken).where(ApiToken.key_id == parsed.key_id))
        if existing is not None:
            return given  # installed by an earlier run of the demo in this state directory
        salt = __import__("secrets").token_bytes(16)
        digest = await asyncio.to_thread(hash_secret, parsed.secret, salt, DEFAULT_KDF)
        session.add(
            ApiToken(
                key_id=parsed.key_id,
                name="demo-nurse",
                role="nurse",
                kdf=DEFAULT_KDF.label(),
                salt=salt,
                secret_hash=digest,
                created_at=datetime.now(UTC),
                created_by="demo",
            )
        )
    return given


async def _run_homes(broker: DemoBroker, state_dir: Path, homes: int, clock: SimClock) -> None:
    from simulators.home import home_config, run_home

    outboxes = state_dir / "gateways"
    await asyncio.to_thread(outboxes.mkdir, parents=True, exist_ok=True)
    async with asyncio.TaskGroup() as group:
        for index in range(homes):
            scenario = SCENARIO_MIX[index % len(SCENARIO_MIX)]
            gateway_id = f"demo-gw-{index + 1:02d}"
            config = home_config(
                gateway_id,
                broker_url=broker.url,
                scenario=scenario,
                outbox_path=outboxes / f"{gateway_id}.db",
                patient_id=f"demo-pt-{index + 1:02d}",
                # At least 4 real seconds between heartbeats: at 20x a 30 s interval leaves the server a
                # grace of 0.75 real seconds, and a busy laptop would see gateways flap offline.
                heartbeat_interval_s=max(30.0, 4.0 * clock.speed),
            )
            if broker.protocol_version != config.broker.protocol_version:
                config = config.model_copy(
                    update={
                        "broker": config.broker.model_copy(
                            update={"protocol_version": broker.protocol_version}
                        )
                    }
                )
            print(f"  home {gateway_id}: patient {config.patients[0].id}, scenario {scenario}", flush=True)
            group.create_task(
                _one_home(
                    partial(
                        run_home,
                        config,
                        scenario=scenario,
                        seed=index + 1,
                        clock=clock,
                        start_h=START_HOUR.get(scenario, 0.0),
                    ),
                    gateway_id,
                ),
                name=f"home {gateway_id}",
            )


async def _one_home(run: Callable[[], Coroutine[Any, Any, None]], gateway_id: str) -> None:
    """Run one home; when its agent fails, say so and restart it after a pause (as systemd restarts a
    real gateway's agent), while the other homes go on."""
    backoff = Backoff(initial_s=1.0, maximum_s=30.0)
    while True:
        try:
            await run()
            return
        except Exception:
            delay = backoff.next_delay()
            logger.exception(
                "simulated home %s stopped with an error; restarting it in %.0f s", gateway_id, delay
            )
        await asyncio.sleep(delay)


async def summary(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    from server.storage.models import Alert, AlertEventRecord, Assessment, Gateway, Observation

    counts: dict[str, int] = {}
    from server.engine.store import reading

    async with reading(sessions) as session:
        for name, model in (
            ("gateways", Gateway),
            ("observations", Observation),
            ("assessments", Assessment),
            ("alerts", Alert),
            ("alert_events", AlertEventRecord),
        ):
            counts[name] = int(await session.scalar(select(func.count()).select_from(model)) or 0)
    return counts


async def run_demo(
    *,
    homes: int,
    speed: float,
    duration_s: float | None,
    http_port: int,
    broker_url: str | None,
    api_token: str | None,
    state_dir: Path,
) -> int:
    from server.engine import BrokerSettings, EngineSettings
    from server.process import WorkerSettings, configure_logging, run_worker

    configure_logging("text", logging.INFO)
    # Sequence gaps that open and close again as concurrent batches commit out of order are normal here.
    logging.getLogger("server.ingest").setLevel(logging.ERROR)
    # The embedded broker's amqtt logs every connection, and its state machines every transition, at INFO.
    for chatty in ("amqtt", "transitions"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    await asyncio.to_thread(_prepare_state_dir, state_dir)
    interrupted = asyncio.Event()  # Ctrl-C or SIGTERM
    server_stop = asyncio.Event()  # set last, after the homes stopped and the summary was read
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupted.set)
    try:
        async with contextlib.AsyncExitStack() as stack:
            broker = await stack.enter_async_context(demo_broker(state_dir, broker_url))
            print(f"WardWatch demo broker: {broker.description}", flush=True)
            if http_port == 0:
                http_port = _free_port()
            settings = WorkerSettings(
                state_dir=state_dir,
                worker_id="demo",
                broker=BrokerSettings(url=broker.url, protocol_version=broker.protocol_version),
                ingest={"share_group": None},
                engine=EngineSettings(catch_up_hours=1),
                escalation=EscalationPolicy(),  # its timeouts run on the simulated clock below
                api={"host": "127.0.0.1", "port": http_port},
                log_format="text",
            )
            # One simulated clock for the server and every home, so ages, staleness and escalation
            # timeouts agree however fast the patients' time runs.
            clock = SimClock.starting_now(speed=speed)
            ready: asyncio.Future[ServerRuntime] = loop.create_future()
            server = asyncio.create_task(
                run_worker(settings, stop=server_stop, on_ready=ready.set_result, clock=clock.now),
                name="demo server",
            )
            homes_task: asyncio.Task[None] | None = None
            try:
                runtime = await _first(ready, server, interrupted)
                if runtime is None:
                    return 0
                token = await _api_token(runtime.sessions, api_token)
                base = f"http://127.0.0.1:{runtime.http_port}"
                print(
                    f"\nWardWatch demo running: {homes} simulated home(s) at {speed:g}x speed, "
                    f"broker {broker.url}\n"
                    f"  page:     {base}/   (sign in with the token below)\n"
                    f"  API:      {base}/api/patients   (OpenAPI: {base}/api/openapi.json)\n"
                    f"  token:    {token}   (role nurse; send as 'Authorization: Bearer <token>')\n"
                    f"  try:      curl -H 'Authorization: Bearer {token}' {base}/api/alerts\n"
                    f"  state:    {state_dir}\n"
                    f"Ctrl-C stops everything.\n",
                    flush=True,
                )
                homes_task = asyncio.create_task(
                    _run_homes(broker, state_dir, homes, clock), name="demo homes"
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(duration_s):
                        await _until_stopped(interrupted, server, homes_task)
                await _cancel(homes_task)
                counts = await summary(runtime.sessions)
            finally:
                if homes_task is not None:
                    await _cancel(homes_task)
                server_stop.set()
                await server
            print(
                "WardWatch demo stopped: "
                + ", ".join(f"{value} {name.replace('_', ' ')}" for name, value in counts.items()),
                flush=True,
            )
            return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _cancel(task: asyncio.Task[None]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _first(
    ready: asyncio.Future[ServerRuntime], server: asyncio.Task[None], stop: asyncio.Event
) -> ServerRuntime | None:
    """The runtime once the server is ready; None when stopped first; the server's error if it failed."""
    stopped = asyncio.create_task(stop.wait(), name="demo stop")
    try:
        waiting: set[asyncio.Future[Any]] = {ready, server, stopped}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if ready.done():
        return ready.result()
    if server.done():
        server.result()  # raises the reason it ended
        raise DemoError("the server stopped before it was ready")
    return None


async def _until_stopped(stop: asyncio.Event, server: asyncio.Task[None], homes: asyncio.Task[None]) -> None:
    stopped = asyncio.create_task(stop.wait(), name="demo stop")
    try:
        done, _ = await asyncio.wait({stopped, server, homes}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    for task in (server, homes):
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
