"""Session events posted to the app go to the pipeline's inbox, as files the inbox sensor accepts.

Each event is appended (and flushed) to an open ``online_events_<day>_<pid>_<n>.csv.part`` file in the inbox;
the ``.part`` suffix tells the inbox sensor the file is still being written.  A file is closed (renamed to
``.csv``, atomic) when it is ``rotate_seconds`` old, has ``rotate_events`` rows, the day changes, or the app
stops; ``.part`` files left by a process that died are closed at the next start.  The sensor then archives
them and the next ingest reads them into ``raw.events`` (see :mod:`ecom_pipeline.sources.online_events`).
Customer ids are written as the shop sent them: staging pseudonymises them like every delivered file.
"""

from __future__ import annotations

import csv
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from ecom_pipeline.automation.inbox import inbox_dir
from ecom_pipeline.sources.online_events import COLUMNS, PREFIX


class EventSpool:
    def __init__(self, data_root: str | Path, *, rotate_seconds: float = 60.0, rotate_events: int = 50_000):
        self.inbox = inbox_dir(data_root)
        self.rotate_seconds = rotate_seconds
        self.rotate_events = rotate_events
        self._lock = threading.Lock()
        self._fh = None
        self._path: Path | None = None
        self._day = ""
        self._opened = 0.0
        self._rows = 0
        self._seq = 0
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._close_orphans()

    def _close_orphans(self) -> None:
        for part in self.inbox.glob(f"{PREFIX}*.csv.part"):
            pid = part.name.split("_")[-2] if part.name.count("_") >= 3 else ""
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                os.replace(part, part.with_name(part.name[: -len(".part")]))

    def append(self, rows: list[dict]) -> int:
        """Write ``rows`` (keys of :data:`COLUMNS`; ``event_id`` is generated when missing); returns the
        count."""
        if not rows:
            return 0
        due = None
        with self._lock:
            day = datetime.now(UTC).strftime("%Y-%m-%d")
            if self._fh is not None and (
                day != self._day
                or self._rows >= self.rotate_events
                or time.monotonic() - self._opened >= self.rotate_seconds
            ):
                due = self._detach_locked()
            if self._fh is None:
                self._seq += 1
                self._day = day
                self._path = self.inbox / f"{PREFIX}{day}_{os.getpid()}_{self._seq:06d}.csv.part"
                self._fh = open(self._path, "w", newline="", encoding="utf-8")  # noqa: SIM115 - kept open across appends
                self._writer = csv.DictWriter(self._fh, fieldnames=list(COLUMNS))
                self._writer.writeheader()
                self._opened = time.monotonic()
                self._rows = 0
            for row in rows:
                self._writer.writerow(
                    {c: row.get(c) if c != "event_id" else (row.get(c) or uuid.uuid4().hex) for c in COLUMNS}
                )
            self._fh.flush()
            self._rows += len(rows)
        if due is not None:
            _close(*due)
        return len(rows)

    def rotate(self, force: bool = False) -> Path | None:
        """Close the open file if it is due (or ``force``); returns the closed file's path."""
        with self._lock:
            if self._fh is None:
                return None
            if not (force or time.monotonic() - self._opened >= self.rotate_seconds):
                return None
            due = self._detach_locked()
        return _close(*due)

    def _detach_locked(self) -> tuple:
        """Take the open file off the spool; the next append opens a new one.  It is synced and renamed by
        :func:`_close` after the lock is released, so concurrent appends never wait for an fsync."""
        due = (self._fh, self._path)
        self._fh, self._path = None, None
        return due


def _close(fh, path: Path) -> Path:
    fh.flush()
    os.fsync(fh.fileno())
    fh.close()
    done = path.with_name(path.name[: -len(".part")])
    os.replace(path, done)
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
