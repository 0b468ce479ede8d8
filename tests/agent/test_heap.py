"""edge_agent.heap: what is alive at the freeze leaves the collector's generations; later objects do not."""

from __future__ import annotations

import gc

from edge_agent.heap import freeze_long_lived


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
