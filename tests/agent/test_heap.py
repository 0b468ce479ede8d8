"""edge_agent.heap: what is alive at the freeze leaves the collector's generations; later objects do not."""

from __future__ import annotations

import gc

from edge_agent.heap import YOUNG_COLLECTION_THRESHOLD, collect_young_less_often, freeze_long_lived


def test_freezing_leaves_what_is_alive_out_of_collections_but_not_what_comes_later() -> None:
    before = [object()]  # a container: tracked by the collector
    try:
        frozen = freeze_long_lived()
        after = [object()]
        assert frozen == gc.get_freeze_count() > 0
        assert not any(tracked is before for tracked in gc.get_objects())
        assert any(tracked is after for tracked in gc.get_objects())
    finally:
        gc.unfreeze()  # give this test process its collector back
    assert any(tracked is before for tracked in gc.get_objects())


def test_a_burst_below_the_young_threshold_starts_no_collection() -> None:
    """A batch's worth of objects alive at once no longer starts collections that find nothing."""
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    before = gc.get_threshold()
    gc.callbacks.append(count)
    try:
        collect_young_less_often()
        gc.collect()
        collections.clear()
        burst = [[index] for index in range(YOUNG_COLLECTION_THRESHOLD // 2)]
        assert collections == []
        gc.set_threshold(700, *before[1:])  # CPython's default: the same burst starts collections
        burst += [[index] for index in range(YOUNG_COLLECTION_THRESHOLD // 2)]
        assert collections
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*before)
    assert len(burst) == YOUNG_COLLECTION_THRESHOLD // 2 * 2
