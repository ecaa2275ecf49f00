"""The app's pause record (api.pauses): collector passes per generation through gc.callbacks, slow pauses
kept with their wall time, and freezing what is loaded so a full pass no longer walks it."""

import gc
import time

from ecom_pipeline.api.pauses import SLOW_MS, GcPauses, PauseLog, freeze_loaded_objects


def test_pause_log_counts_every_pause_and_keeps_only_slow_ones_with_their_time():
    log = PauseLog(keep=2)
    before = time.time()
    for ms in (1.0, SLOW_MS, 40.0, 7.5):
        log.add(ms, f"pause of {ms}")
    out = log.summary()
    assert out["count"] == 4 and out["total_ms"] == 53.5 and out["max_ms"] == 40.0
    assert [s["ms"] for s in out["slow"]] == [40.0, 7.5]  # the last `keep` slow ones; 1 ms only counted
    assert all(before <= s["at"] <= time.time() for s in out["slow"])


def test_gc_pauses_records_each_generation_and_uninstalls():
    pauses = GcPauses().install()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        pauses.uninstall()
    out = pauses.summary()
    assert out["gen0"]["count"] >= 1 and out["gen2"]["count"] >= 1 and out["gen2"]["max_ms"] > 0
    gc.collect(2)  # after uninstall nothing more is recorded
    assert pauses.summary()["gen2"]["count"] == out["gen2"]["count"]


def test_frozen_objects_are_out_of_the_collectors_reach_and_garbage_still_collected():
    class Node:
        pass

    loaded = [{"row": i, "items": [i]} for i in range(1000)]  # what an app loads and keeps
    frozen = freeze_loaded_objects()
    try:
        assert frozen == gc.get_freeze_count() >= 1000
        young = {id(o) for g in range(3) for o in gc.get_objects(generation=g)}
        assert id(loaded) not in young and id(loaded[0]["items"]) not in young
        a, b = Node(), Node()  # a cycle made after the freeze is still found by a full pass
        a.other, b.other = b, a
        del a, b
        assert gc.collect() >= 2
    finally:
        gc.unfreeze()
