"""Splitting a serial byte stream into text lines, with a bound on line length."""

from __future__ import annotations


class LineFramer:
    """Feed it raw reads; get back complete lines without their CR/LF.

    A line longer than ``max_line_bytes`` (not counting its CRs) is dropped whole (up to its newline) and
    counted in ``overlong_lines``, so a device that never sends a newline cannot grow the buffer without
    bound. Where the reads split the stream does not change the lines returned.
    """

    def __init__(self, max_line_bytes: int = 512) -> None:
        self._max = max_line_bytes
        self._pending = bytearray()
        self._discarding = False
        self.overlong_lines = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        lines: list[bytes] = []
        self._pending += data
        while True:
            newline = self._pending.find(b"\n")
            if newline < 0:
                break
            line = bytes(self._pending[:newline]).rstrip(b"\r")
            del self._pending[: newline + 1]
            if self._discarding:
                self._discarding = False
                continue
            if len(line) > self._max:
                self.overlong_lines += 1
                continue
            if line.strip():
                lines.append(line)
        # Trailing CRs are not part of a line (they are stripped above), so a line of max bytes whose CR
        # came in this read and its LF in the next is kept, as it is when read whole. A run of CRs longer
        # than a line is junk: at most 2 * max bytes are ever kept.
        content = len(self._pending.rstrip(b"\r"))
        if content > self._max or len(self._pending) > 2 * self._max:
            if not self._discarding:
                self.overlong_lines += 1
            self._discarding = True
            self._pending.clear()
        return lines
