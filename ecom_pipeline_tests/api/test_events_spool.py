"""The app's event spool (api.events.EventSpool): rows land in a .part file the inbox sensor skips, a due file
is closed (synced, renamed to .csv) with every row, and closing never makes a concurrent append wait for the
fsync (the append runs on a recommendation request's path)."""

import csv
import threading
import time

from ecom_pipeline.api import events
from ecom_pipeline.api.events import EventSpool
from ecom_pipeline.sources.online_events import COLUMNS


def _row(i: int) -> dict:
    return {
        "ts": "2026-11-30 10:00:00",
        "customer_id": f"c{i}",
        "session_id": None,
        "event_type": "view",
        "product_id": f"p{i}",
    }


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_rotation_closes_every_row_into_a_csv_and_appends_go_on_in_a_new_file(tmp_path):
    spool = EventSpool(tmp_path)
    assert spool.append([_row(1), _row(2)]) == 2
    assert spool.rotate() is None  # not due yet
    parts = list(spool.inbox.glob("*.csv.part"))
    assert len(parts) == 1
    closed = spool.rotate(force=True)
    assert closed.suffix == ".csv" and not parts[0].exists()
    got = _rows(closed)
    assert [r["customer_id"] for r in got] == ["c1", "c2"] and all(r["event_id"] for r in got)
    assert list(got[0]) == list(COLUMNS)
    spool.append([_row(3)])
    spool.rotate_seconds = 0.0  # due: the next append closes the old file and opens another
    spool.append([_row(4)])
    done = sorted(spool.inbox.glob("*.csv"))
    assert [[r["customer_id"] for r in _rows(p)] for p in done] == [["c1", "c2"], ["c3"]]
    assert spool.rotate(force=True).exists()


def test_an_append_does_not_wait_for_the_fsync_of_a_closing_file(tmp_path, monkeypatch):
    spool = EventSpool(tmp_path)
    spool.append([_row(1)])
    in_fsync, release = threading.Event(), threading.Event()
    real_fsync = events.os.fsync

    def slow_fsync(fd):
        in_fsync.set()
        release.wait(10)  # a slow disk
        real_fsync(fd)

    monkeypatch.setattr(events.os, "fsync", slow_fsync)
    closer = threading.Thread(target=spool.rotate, kwargs={"force": True})
    closer.start()
    assert in_fsync.wait(10)
    started = time.monotonic()
    assert spool.append([_row(2)]) == 1  # while the other file is still being synced
    waited = time.monotonic() - started
    release.set()
    closer.join(10)
    assert waited < 5, f"the append waited {waited:.1f} s for another file's fsync"
    monkeypatch.setattr(events.os, "fsync", real_fsync)
    closed = spool.rotate(force=True)
    assert [[r["customer_id"] for r in _rows(p)] for p in sorted(spool.inbox.glob("*.csv"))] == [
        ["c1"],
        ["c2"],
    ]
    assert closed.exists()
