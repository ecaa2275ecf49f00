"""The app's text micro-batcher (api.models.BatchingEncoder): concurrent requests share a forward pass, each
gets its own row, an error reaches only the caller whose text caused it, and a lone request waits at most
the collection window.  The encoder here is a deterministic function of the text (the batcher is what is
under test; the real encoders are exercised through the app in test_app.py)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ecom_pipeline.api.models import BatchingEncoder


class RecordingEncoder:
    """vector = (text length, code-point sum, 1 for query / 2 for passage); records every batch it saw."""

    model_id = "recording"

    def __init__(self, seconds_per_call: float = 0.0):
        self.seconds_per_call = seconds_per_call
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    @staticmethod
    def expected(text: str, kind: str) -> np.ndarray:
        return np.array([len(text), sum(map(ord, text)), 1 if kind == "query" else 2], np.float32)

    def encode(self, texts, kind="passage"):
        with self._lock:
            self.calls.append(list(texts))
        if any("poison" in t for t in texts):
            raise ValueError("cannot encode a poisoned text")
        time.sleep(self.seconds_per_call)
        return np.stack([self.expected(t, kind) for t in texts])


def test_concurrent_requests_are_batched_and_each_gets_its_own_vector():
    inner = RecordingEncoder(seconds_per_call=0.02)
    batcher = BatchingEncoder(inner, window_s=0.005)
    texts = [(f"review number {i} " + "x" * i, "query" if i % 3 == 0 else "passage") for i in range(24)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        out = list(pool.map(lambda tk: batcher.encode(tk[0], tk[1], timeout=30), texts))
    for (text, kind), vec in zip(texts, out, strict=True):
        assert np.array_equal(vec, RecordingEncoder.expected(text, kind)), text
    # 24 requests from 8 concurrent callers: far fewer passes than requests, and some passes hold several
    assert batcher.texts == 24 and batcher.batches < 24
    assert max(len(c) for c in inner.calls) > 1
    # a pass never mixes query and passage texts (their prefixes differ)
    for call in inner.calls:
        kinds = {k for t, k in texts if t in call}
        assert len(kinds) == 1


def test_an_error_reaches_only_the_caller_whose_text_caused_it():
    inner = RecordingEncoder(seconds_per_call=0.01)
    batcher = BatchingEncoder(inner, window_s=0.05)  # a wide window: all of them land in one batch
    texts = ["fine one", "fine two", "poison pill", "fine three"]
    barrier = threading.Barrier(len(texts))

    def call(text):
        barrier.wait()
        try:
            return batcher.encode(text, "passage", timeout=30)
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        results = dict(zip(texts, pool.map(call, texts), strict=True))
    assert isinstance(results["poison pill"], ValueError) and "poisoned" in str(results["poison pill"])
    for text in ("fine one", "fine two", "fine three"):
        assert np.array_equal(results[text], RecordingEncoder.expected(text, "passage"))
    assert any(len(c) > 1 and "poison pill" in c for c in inner.calls), inner.calls  # it was batched first
    # the worker survives the error: a later request is answered
    assert np.array_equal(
        batcher.encode("after", "query", timeout=10), RecordingEncoder.expected("after", "query")
    )


@pytest.mark.parametrize("window_s", [0.0, 0.05])
def test_a_lone_request_waits_at_most_the_window(window_s):
    inner = RecordingEncoder()
    batcher = BatchingEncoder(inner, window_s=window_s)
    batcher.encode("warm the worker up", "query", timeout=10)
    waits = []
    for i in range(5):
        started = time.perf_counter()
        vec = batcher.encode(f"alone {i}", "passage", timeout=10)
        waits.append(time.perf_counter() - started)
        assert np.array_equal(vec, RecordingEncoder.expected(f"alone {i}", "passage"))
    # the median is the robust figure on a shared machine; 30 ms of slack for thread hand-offs
    assert sorted(waits)[2] < window_s + 0.03, waits
    assert all(len(c) == 1 for c in inner.calls)


def test_requests_within_the_window_share_a_pass():
    inner = RecordingEncoder()
    batcher = BatchingEncoder(inner, window_s=0.2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(batcher.encode, "first", "passage", 10)
        time.sleep(0.02)  # well inside the window
        second = pool.submit(batcher.encode, "second", "passage", 10)
        assert np.array_equal(first.result(), RecordingEncoder.expected("first", "passage"))
        assert np.array_equal(second.result(), RecordingEncoder.expected("second", "passage"))
    assert inner.calls == [["first", "second"]]


def test_a_request_that_gave_up_is_not_encoded():
    inner = RecordingEncoder(seconds_per_call=0.3)
    batcher = BatchingEncoder(inner, window_s=0.0)
    with ThreadPoolExecutor(max_workers=1) as pool:
        busy = pool.submit(batcher.encode, "keeps the worker busy", "passage", 10)
        time.sleep(0.05)
        with pytest.raises(TimeoutError):
            batcher.encode("impatient", "passage", timeout=0.05)
        busy.result()
    time.sleep(0.1)
    assert not any("impatient" in c for c in inner.calls)
