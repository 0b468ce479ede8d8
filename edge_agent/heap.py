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

logger = logging.getLogger(__name__)


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
