"""Pauses inside the app process that stall every request in flight: garbage-collector passes and the
champion/snapshot poller's ticks.  Recorded cheaply (a counter, a total, a maximum and the last slow ones
with their wall time) so ``/ready`` and the load benchmark can line a latency spike up with its cause."""

from __future__ import annotations

import gc
import threading
import time
from collections import deque

SLOW_MS = 5.0  # a pause at least this long is kept with its wall time (shorter ones only counted)


class PauseLog:
    """Count, total and maximum of one kind of pause, and the last ``keep`` slow ones as (unix time, ms,
    detail)."""

    def __init__(self, keep: int = 50):
        self.count = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.slow: deque[tuple[float, float, str]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, ms: float, detail: str = "") -> None:
        with self._lock:
            self.count += 1
            self.total_ms += ms
            self.max_ms = max(self.max_ms, ms)
            if ms >= SLOW_MS:
                self.slow.append((time.time(), round(ms, 2), detail))

    def summary(self) -> dict:
        with self._lock:
            return {
                "count": self.count,
                "total_ms": round(self.total_ms, 1),
                "max_ms": round(self.max_ms, 2),
                "slow": [{"at": at, "ms": ms, "detail": d} for at, ms, d in self.slow],
            }


class GcPauses:
    """Durations of the collector's passes per generation, through ``gc.callbacks``.

    A pass runs in whichever thread allocated last and holds the GIL throughout, so its length is added to
    every request in flight; a full (generation 2) pass walks every tracked object the process holds."""

    def __init__(self):
        self.by_generation = {g: PauseLog() for g in range(3)}
        self._started = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            ms = (time.perf_counter() - self._started) * 1000
            self._started = 0.0
            self.by_generation[info["generation"]].add(ms, f"collected {info.get('collected', 0)}")

    def install(self) -> GcPauses:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def summary(self) -> dict:
        return {f"gen{g}": log.summary() for g, log in self.by_generation.items()}


def freeze_loaded_objects() -> int:
    """Collect once, then move every object alive now into the collector's permanent generation.

    What the app loads (snapshot tables as dicts and lists, the models, the tokenizer, the web framework) is
    alive until the next reload; without this every full collection walks all of it again while holding the
    GIL, a pause every request in flight waits for.  Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
