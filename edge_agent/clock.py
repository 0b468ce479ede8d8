"""Is the gateway's clock synchronised? Asked of the kernel (adjtimex), which NTP daemons keep informed."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_TIME_ERROR = 5  # adjtimex(2): "the system clock is not synchronized to a reliable server"


def clock_synchronized() -> bool | None:
    """True when the kernel says the clock is synchronised, False when it says not, None when unknown."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    except OSError:
        return None
    buffer = ctypes.create_string_buffer(512)  # struct timex is ~208 bytes; modes (first field) = 0: read
    state = libc.adjtimex(buffer)
    if state < 0:
        return None
    return bool(state != _TIME_ERROR)
