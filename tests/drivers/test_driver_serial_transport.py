"""The serial transport over real pseudo-terminals: pyserial opens the slave side, the test plays the
device on the master side, unplugs it (closes the master) and plugs a new one in at the same path."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers import Reading, Vital
from drivers.serial.ports import PortSettings, UsbId
from drivers.serial.transport import SerialDevice, SerialPortLike, open_serial_port
from drivers.transport import Backoff, Connected, DeviceEvent, Disconnected, ProbeState
from simulators.devices.serial_encoders import contec_packet, masimo_line

FAST = Backoff(base_s=0.01, cap_s=0.05)
LINE_TIME = datetime(2026, 2, 22, 22, 47, 45)


class PtyDevice:
    """A pseudo-terminal whose slave is reachable at a stable symlink, like /dev/serial/by-id/..."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.slave = -1

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self.slave))

    def unplug(self) -> None:
        os.close(self.master)
        os.close(self.slave)
        self.master = self.slave = -1

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.master >= 0:
            self.unplug()


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyDevice]:
    device = PtyDevice(tmp_path / "ttyUSB-oximeter")
    device.plug()
    yield device
    device.close()


async def next_item(items: AsyncIterator[Reading | DeviceEvent]) -> Reading | DeviceEvent:
    async with asyncio.timeout(5):
        return await anext(items)


async def test_masimo_lines_unplug_and_replug(pty: PtyDevice) -> None:
    device = SerialDevice(device_id="rad8-1", kind="masimo", port=str(pty.link), backoff=FAST)
    async with contextlib.aclosing(device.readings()) as items:
        assert isinstance(await next_item(items), Connected)
        pty.send(masimo_line(LINE_TIME, spo2=96, bpm=88, pi=2.5)[:30])  # a line split across reads
        await asyncio.sleep(0)
        pty.send(masimo_line(LINE_TIME, spo2=96, bpm=88, pi=2.5)[30:])
        spo2, pulse = await next_item(items), await next_item(items)
        assert isinstance(spo2, Reading) and isinstance(pulse, Reading)
        assert (spo2.vital, spo2.value, spo2.perfusion_index, spo2.device_id) == (
            Vital.SPO2,
            96,
            2.5,
            "rad8-1",
        )
        assert (pulse.vital, pulse.value) == (Vital.HEART_RATE, 88)

        pty.unplug()
        lost = await next_item(items)
        assert isinstance(lost, Disconnected) and lost.device_id == "rad8-1"

        pty.plug()
        assert isinstance(await next_item(items), Connected)
        pty.send(b"02/22/26 22:47:46 this line is noise\r\n")
        pty.send(masimo_line(LINE_TIME, spo2=91, bpm=101, pi=None))
        spo2 = await next_item(items)
        assert isinstance(spo2, Reading) and (spo2.value, spo2.perfusion_index) == (91, None)
        assert device.parse_errors == 1


async def test_masimo_probe_off_is_reported_on_change(pty: PtyDevice) -> None:
    device = SerialDevice(device_id="rad8-2", kind="masimo", port=str(pty.link), backoff=FAST)
    async with contextlib.aclosing(device.readings()) as items:
        assert isinstance(await next_item(items), Connected)
        for _ in range(2):
            pty.send(masimo_line(LINE_TIME, spo2=None, bpm=None, pi=None, exceptions=0x000821))
        pty.send(masimo_line(LINE_TIME, spo2=97, bpm=70, pi=1.0))
        off = await next_item(items)
        assert isinstance(off, ProbeState) and off.probe_off
        on = await next_item(items)
        assert isinstance(on, ProbeState) and not on.probe_off
        reading = await next_item(items)
        assert isinstance(reading, Reading) and reading.value == 97


async def test_contec_stream_is_decimated_but_probe_changes_are_not(pty: PtyDevice) -> None:
    # A frozen clock: however the bytes are split into reads, they all arrive "within the second".
    frozen = datetime(2026, 2, 22, 22, 47, 45, tzinfo=UTC)
    device = SerialDevice(
        device_id="cms50-1", kind="contec", port=str(pty.link), backoff=FAST, now=lambda: frozen
    )
    async with contextlib.aclosing(device.readings()) as items:
        assert isinstance(await next_item(items), Connected)
        # one second of 60 Hz samples, then the finger comes out, then goes back in
        stream = b"\x12\x34" + contec_packet(spo2=95, pulse=130) * 60
        stream += contec_packet(spo2=None, pulse=None, finger_out=True) * 3
        stream += contec_packet(spo2=94, pulse=128)
        pty.send(stream)
        spo2, pulse = await next_item(items), await next_item(items)
        assert isinstance(spo2, Reading) and isinstance(pulse, Reading)
        assert (spo2.vital, spo2.value, pulse.value) == (Vital.SPO2, 95, 130)
        off = await next_item(items)
        on = await next_item(items)
        assert isinstance(off, ProbeState) and off.probe_off
        assert isinstance(on, ProbeState) and not on.probe_off


async def test_silence_is_reported_and_recovery_too(pty: PtyDevice) -> None:
    device = SerialDevice(
        device_id="rad8-3", kind="masimo", port=str(pty.link), backoff=FAST, silence_timeout_s=0.2
    )
    async with contextlib.aclosing(device.readings()) as items:
        assert isinstance(await next_item(items), Connected)
        silent = await next_item(items)
        assert isinstance(silent, Disconnected) and "no data" in silent.reason
        pty.send(masimo_line(LINE_TIME, spo2=99, bpm=60, pi=4.0))
        assert isinstance(await next_item(items), Connected)
        assert isinstance(await next_item(items), Reading)


@dataclass
class FakePortInfo:
    device: str
    vid: int | None
    pid: int | None
    serial_number: str | None = None


async def test_open_by_usb_vid_pid(pty: PtyDevice) -> None:
    ports = [
        FakePortInfo("/dev/ttyS0", None, None),
        FakePortInfo(str(pty.link), 0x10C4, 0xEA60, "0001"),
    ]
    device = SerialDevice(
        device_id="cms50-2", kind="contec", usb_id="10c4:ea60", backoff=FAST, list_ports=lambda: ports
    )
    async with contextlib.aclosing(device.readings()) as items:
        assert isinstance(await next_item(items), Connected)
        pty.send(contec_packet(spo2=97, pulse=66))
        spo2 = await next_item(items)
        assert isinstance(spo2, Reading) and spo2.value == 97


def test_usb_id_parsing_and_matching() -> None:
    from drivers.errors import DeviceNotFoundError
    from drivers.serial.ports import find_usb_port

    assert UsbId.parse("10C4:ea60") == UsbId(0x10C4, 0xEA60)
    assert str(UsbId.parse("10c4:ea60:A1")) == "10c4:ea60:A1"
    with pytest.raises(ValueError, match="VID:PID"):
        UsbId.parse("10c4")
    two = [
        FakePortInfo("/dev/ttyUSB0", 0x10C4, 0xEA60, "A"),
        FakePortInfo("/dev/ttyUSB1", 0x10C4, 0xEA60, "B"),
    ]
    assert find_usb_port(UsbId(0x10C4, 0xEA60, "B"), lambda: two) == "/dev/ttyUSB1"
    with pytest.raises(DeviceNotFoundError, match="2 serial ports"):
        find_usb_port(UsbId(0x10C4, 0xEA60), lambda: two)
    with pytest.raises(DeviceNotFoundError, match="no serial port"):
        find_usb_port(UsbId(0x0403, 0x6001), lambda: two)


async def test_missing_port_is_retried_until_it_appears(tmp_path: Path) -> None:
    pty = PtyDevice(tmp_path / "ttyLATE")
    device = SerialDevice(device_id="rad8-4", kind="masimo", port=str(pty.link), backoff=FAST)
    try:
        async with contextlib.aclosing(device.readings()) as items:
            first = asyncio.ensure_future(next_item(items))
            await asyncio.sleep(0.1)
            assert not first.done()  # nothing to open yet: retrying quietly
            pty.plug()
            assert isinstance(await first, Connected)
    finally:
        pty.close()


async def test_stopping_right_after_connected_closes_the_port(pty: PtyDevice) -> None:
    closed: list[str] = []

    def open_and_watch(path: str, settings: PortSettings) -> SerialPortLike:
        port = open_serial_port(path, settings)

        class Watched:
            def fileno(self) -> int:
                return port.fileno()

            def close(self) -> None:
                closed.append(path)
                port.close()

        return Watched()

    device = SerialDevice(
        device_id="rad8-5", kind="masimo", port=str(pty.link), backoff=FAST, open_port=open_and_watch
    )
    async with contextlib.aclosing(device.readings()) as items:
        assert isinstance(await next_item(items), Connected)
    assert closed == [str(pty.link)]
