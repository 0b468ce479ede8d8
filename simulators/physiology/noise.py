"""Seeded noise that can be read at any time without replaying what came before.

A sequential generator (draw, draw, draw…) cannot answer "what was the heart rate at 03:17?" without
replaying the night. Instead every random number here lives on an integer lattice: value ``i`` of stream
``s`` for seed ``k`` comes from a numpy ``Generator(PCG64(SeedSequence([k, s, i // CHUNK])))`` filled with
``CHUNK`` draws. Chunks are cached, so reading a whole day at 1 Hz costs a couple of dozen generator
fills, and any instant can be read in any order with the same result.

Streams are named (``"heart_rate/slow"``) and turned into integers with CRC-32, which (unlike ``hash``)
does not change between interpreter runs.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

CHUNK: Final = 4096
"""Lattice values per generator fill."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_NORMAL: Final = 0
_UNIFORM: Final = 1


def stream_id(name: str) -> int:
    """A stable 32-bit id for a named noise stream."""
    return zlib.crc32(name.encode())


@lru_cache(maxsize=2048)
def _chunk(seed: int, stream: int, chunk: int, distribution: int) -> FloatArray:
    generator = np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, stream, chunk, distribution]))
    )
    values = generator.standard_normal(CHUNK) if distribution == _NORMAL else generator.random(CHUNK)
    values.flags.writeable = False
    return values


def _lattice(seed: int, stream: int, index: IntArray, distribution: int) -> FloatArray:
    if index.size and int(index.min()) < 0:
        raise ValueError("noise lattice indices must be >= 0 (simulated time starts at 0)")
    chunks = index // CHUNK
    offsets = index % CHUNK
    out = np.empty(index.shape, dtype=np.float64)
    for chunk in np.unique(chunks):
        where = chunks == chunk
        out[where] = _chunk(seed, stream, int(chunk), distribution)[offsets[where]]
    return out


def lattice_normal(seed: int, stream: str, index: IntArray) -> FloatArray:
    """Standard normal values at integer lattice points."""
    return _lattice(seed, stream_id(stream), np.asarray(index, dtype=np.int64), _NORMAL)


def lattice_uniform(seed: int, stream: str, index: IntArray) -> FloatArray:
    """Uniform values in [0, 1) at integer lattice points."""
    return _lattice(seed, stream_id(stream), np.asarray(index, dtype=np.int64), _UNIFORM)


def smooth_noise(seed: int, stream: str, t_s: FloatArray, spacing_s: float) -> FloatArray:
    """Smooth noise with standard deviation 1: normal values every ``spacing_s``, eased in between.

    Plain interpolation between independent values would have less variance half-way between lattice
    points; dividing by the interpolation weights' norm keeps the standard deviation 1 everywhere.
    """
    x = np.asarray(t_s, dtype=np.float64) / spacing_s
    below = np.floor(x)
    frac = x - below
    ease = frac * frac * (3.0 - 2.0 * frac)
    index = below.astype(np.int64)
    a = lattice_normal(seed, stream, index)
    b = lattice_normal(seed, stream, index + 1)
    norm = np.sqrt((1.0 - ease) ** 2 + ease**2)
    result: FloatArray = ((1.0 - ease) * a + ease * b) / norm
    return result


def linear_noise(seed: int, stream: str, t_s: FloatArray, spacing_s: float) -> FloatArray:
    """Rougher noise with standard deviation 1: normal values every ``spacing_s``, joined by straight lines.

    Used for beat-to-beat irregularity (atrial fibrillation), which should not look smooth.
    """
    x = np.asarray(t_s, dtype=np.float64) / spacing_s
    below = np.floor(x)
    frac = x - below
    index = below.astype(np.int64)
    a = lattice_normal(seed, stream, index)
    b = lattice_normal(seed, stream, index + 1)
    norm = np.sqrt((1.0 - frac) ** 2 + frac**2)
    result: FloatArray = ((1.0 - frac) * a + frac * b) / norm
    return result
