"""Short pauses of the cyclic garbage collector in long-running asyncio processes.

A full collection walks every tracked object. What start-up allocates (modules, ORM mappers, validators,
settings; a simulated fleet's prepared homes) lives as long as the process, yet each full collection
walks it again while the event loop waits: ~100 ms for the 175,000 objects of a server worker on the
2-vCPU benchmark machine, every few seconds under load, which was the largest single stall in its loop
(docs/benchmarks.md, fifth round). Freezing it moves it out of the collector's generations.
"""

from __future__ import annotations

import gc
import logging
from typing import Final

logger = logging.getLogger(__name__)

YOUNG_COLLECTION_THRESHOLD: Final = 10_000
"""Net allocations of tracked objects that start a young-generation collection (CPython's default: 700)."""


def freeze_long_lived() -> int:
    """Collect, then move every object alive now into the permanent generation (``gc.freeze``), so that
    later collections only walk what was allocated afterwards. Call it once start-up is over; returns
    how many objects are frozen. Objects frozen here are still freed by reference counting; only a
    reference cycle among them that becomes garbage later is not collected."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info("start-up heap frozen: %d objects left out of garbage collection", frozen)
    return frozen


def collect_young_less_often(threshold: int = YOUNG_COLLECTION_THRESHOLD) -> None:
    """Start a young-generation collection only after ``threshold`` net allocations of tracked objects
    (the older generations keep theirs, which count collections of the generation below).

    CPython counts allocations minus deallocations, so a burst that allocates more than 700 objects at
    once (decoding a batch of a hundred messages) starts collections that find almost nothing: the
    objects are alive, and die by reference counting a moment later, after the survivors have been
    promoted, which in turn brings full collections closer. With 10,000 a server worker at 1,000 homes
    made 69 young collections in a 2-minute run instead of ~5,000, and no full collection after its
    start-up; the collector's CPU fell from ~5 s to ~0.5 s (docs/benchmarks.md, seventh round). The cost
    is a longer young collection (~6 ms instead of ~0.4 ms) and at most a few MB of young garbage."""
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)
