"""Serial oximeters through pyserial: open by path or USB VID:PID, decode, reconnect after an unplug.

pyserial opens and configures the port (baud rate, parity: :data:`~drivers.serial.ports.PORT_SETTINGS`);
reading is non-blocking through the event loop's reader callback on the port's file descriptor (POSIX;
the gateway runs Linux), so no thread is needed and cancelling the consumer stops the reader at once.
An unplugged USB adapter (or a closed pseudo-terminal master) makes the read fail or return end of file;
the device then reports :class:`~drivers.transport.Disconnected`, closes the port, and tries again with
capped, jittered backoff until the port is back (the same path, or the same VID:PID on a new path).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Callable, Iterable
from datetime import UTC, datetime, tzinfo
from typing import Final, Protocol

import serial

from drivers.errors import DeviceNotFoundError, ParseError
from drivers.reading import Reading
from drivers.serial import contec, masimo
from drivers.serial.framing import LineFramer
from drivers.serial.ports import PORT_SETTINGS, PortInfo, PortSettings, SerialKind, UsbId, find_usb_port
from drivers.transport import Backoff, Connected, DeviceEvent, Disconnected, ProbeState

logger = logging.getLogger(__name__)

READ_CHUNK: Final = 4096
DEFAULT_MIN_INTERVAL_S: Final = {SerialKind.MASIMO: 0.0, SerialKind.CONTEC: 1.0}
"""Contec streams about 60 samples a second; by default one reading per vital per second is kept."""


class SerialPortLike(Protocol):
    """What the transport needs of an open ``serial.Serial``."""

    def fileno(self) -> int: ...

    def close(self) -> None: ...


class PortLost(Exception):
    """The open port failed (unplugged adapter, closed pty)."""


def open_serial_port(path: str, settings: PortSettings) -> SerialPortLike:
    port = serial.Serial(
        port=path,
        baudrate=settings.baudrate,
        bytesize=settings.bytesize,
        parity=settings.parity,
        stopbits=settings.stopbits,
        xonxoff=settings.xonxoff,
        rtscts=settings.rtscts,
        timeout=0,
        exclusive=True,
    )
    return port


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SerialDevice:
    """A Masimo or Contec oximeter on a serial port; implements :class:`drivers.transport.Device`.

    ``device_tz`` is the zone the device's clock is set in; the default ``None`` is the gateway's local
    zone (daylight saving included). Readings from a device without a clock use the receive time.
    """

    def __init__(
        self,
        *,
        device_id: str,
        kind: SerialKind | str,
        port: str | None = None,
        usb_id: UsbId | str | None = None,
        settings: PortSettings | None = None,
        min_interval_s: float | None = None,
        silence_timeout_s: float = 30.0,
        device_tz: tzinfo | None = None,
        backoff: Backoff | None = None,
        now: Callable[[], datetime] = _utc_now,
        open_port: Callable[[str, PortSettings], SerialPortLike] = open_serial_port,
        list_ports: Callable[[], Iterable[PortInfo]] | None = None,
    ) -> None:
        if (port is None) == (usb_id is None):
            raise ValueError("give exactly one of port (a path) or usb_id (VID:PID)")
        self._device_id = device_id
        self.kind = SerialKind(kind)
        self._path = port
        self._usb_id = UsbId.parse(usb_id) if isinstance(usb_id, str) else usb_id
        self._settings = settings or PORT_SETTINGS[self.kind]
        self._min_interval_s = DEFAULT_MIN_INTERVAL_S[self.kind] if min_interval_s is None else min_interval_s
        self._silence_timeout_s = silence_timeout_s
        self._device_tz = device_tz
        self._backoff = backoff or Backoff()
        self._now = now
        self._open_port = open_port
        self._list_ports = list_ports
        self.parse_errors = 0
        """Lines or packets that could not be decoded (each logged at DEBUG with its bytes in hex)."""

    @property
    def device_id(self) -> str:
        return self._device_id

    def _resolve(self) -> str:
        if self._path is not None:
            return self._path
        assert self._usb_id is not None
        if self._list_ports is None:
            return find_usb_port(self._usb_id)
        return find_usb_port(self._usb_id, self._list_ports)

    async def readings(self) -> AsyncGenerator[Reading | DeviceEvent, None]:
        while True:
            try:
                path = self._resolve()
                port = self._open_port(path, self._settings)
            except (DeviceNotFoundError, serial.SerialException, OSError) as exc:
                delay = self._backoff.next_delay()
                logger.info(
                    "%s: cannot open serial port (%s); retrying in %.1f s", self._device_id, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            logger.info("%s: opened %s (%s)", self._device_id, path, self.kind)
            reason = "closed"
            try:
                yield Connected(self._device_id, self.kind.value, self._now())
                async with contextlib.aclosing(self._session(port)) as session:
                    async for item in session:
                        yield item
            except PortLost as exc:
                reason = str(exc)
            finally:
                port.close()
            logger.warning("%s: serial port %s lost: %s", self._device_id, path, reason)
            yield Disconnected(self._device_id, reason, self._now())
            await asyncio.sleep(self._backoff.next_delay())

    async def _session(self, port: SerialPortLike) -> AsyncGenerator[Reading | DeviceEvent, None]:
        """Readings and probe/silence events from one open port, until it fails (PortLost)."""
        framer = LineFramer(masimo.MAX_LINE_BYTES)
        decoder = contec.ContecDecoder()
        last_emitted: datetime | None = None
        probe_off: bool | None = None
        silent = False
        while True:
            try:
                async with asyncio.timeout(self._silence_timeout_s):
                    chunk = await _read_chunk(port)
            except TimeoutError:
                if not silent:
                    silent = True
                    seconds = f"{self._silence_timeout_s:g}"
                    yield Disconnected(self._device_id, f"no data for {seconds} s", self._now())
                continue
            received_at = self._now()
            if silent:
                silent = False
                yield Connected(self._device_id, self.kind.value, received_at)
            self._backoff.reset()
            for measurement in self._decode(chunk, framer, decoder):
                off = measurement_probe_off(measurement)
                if off != probe_off:
                    if probe_off is not None or off:
                        yield ProbeState(self._device_id, off, received_at)
                    probe_off = off
                if (
                    last_emitted is not None
                    and (received_at - last_emitted).total_seconds() < self._min_interval_s
                ):
                    continue
                readings = measurement.to_readings(self._device_id, received_at, device_tz=self._device_tz)
                if readings:
                    last_emitted = received_at
                for item in readings:
                    yield item

    def _decode(
        self, chunk: bytes, framer: LineFramer, decoder: contec.ContecDecoder
    ) -> list[masimo.MasimoReading | contec.ContecSample]:
        if self.kind is SerialKind.CONTEC:
            before = decoder.discarded_bytes
            samples: list[masimo.MasimoReading | contec.ContecSample] = list(decoder.feed(chunk))
            if decoder.discarded_bytes != before:
                self.parse_errors += 1
                logger.debug(
                    "%s: resynchronised, dropped %d bytes", self._device_id, decoder.discarded_bytes - before
                )
            return samples
        before_overlong = framer.overlong_lines
        lines = framer.feed(chunk)
        if framer.overlong_lines != before_overlong:
            self.parse_errors += framer.overlong_lines - before_overlong
            logger.debug("%s: dropped an over-long line", self._device_id)
        parsed: list[masimo.MasimoReading | contec.ContecSample] = []
        for line in lines:
            try:
                parsed.append(masimo.parse_line(line))
            except ParseError as exc:
                self.parse_errors += 1
                logger.debug("%s: %s", self._device_id, exc)
        return parsed


def measurement_probe_off(measurement: masimo.MasimoReading | contec.ContecSample) -> bool:
    if isinstance(measurement, contec.ContecSample):
        return measurement.finger_out
    return bool(measurement.exceptions & masimo.PROBE_OFF_EXCEPTIONS)


async def _read_chunk(port: SerialPortLike) -> bytes:
    """The next bytes the port has, waiting for them without blocking the loop; PortLost on failure."""
    loop = asyncio.get_running_loop()
    fd = port.fileno()
    waiter: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        if waiter.done():
            return
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            waiter.set_exception(PortLost(f"read failed: {exc.strerror or exc}"))
            return
        if data:
            waiter.set_result(data)
        else:
            waiter.set_exception(PortLost("end of file (device unplugged)"))

    loop.add_reader(fd, readable)
    try:
        return await waiter
    finally:
        loop.remove_reader(fd)
