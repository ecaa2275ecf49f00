"""The folders under the data root, named once.

Framework-free (plain paths, no Dagster): the ``paths`` resource (:mod:`ecom_pipeline.resources.paths`)
hands a :class:`DataPaths` to assets and sensors; the serving app and the framework-free helpers build one
from ``Settings.data_root``.  Nothing else joins a folder name onto the data root
(``ecom_pipeline_tests/test_data_paths.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataPaths:
    """``root`` is ``Settings.data_root`` (``ECOM_DATA_ROOT``, default ``<repo>/data``)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def models(self) -> Path:
        """Converted / exported encoders (ONNX, int8) cached between runs."""
        return self.root / "models"

    @property
    def reports(self) -> Path:
        """Files people read beside the ``reports`` schema: plots, the DP CSV."""
        return self.root / "reports"

    def report(self, name: str) -> Path:
        return self.reports / name

    @property
    def inbox(self) -> Path:
        """Where a shop drops delivery files (``automation/inbox.py``)."""
        return self.root / "inbox"

    @property
    def inbox_processed(self) -> Path:
        """Accepted deliveries, archived per delivery day."""
        return self.inbox / "processed"

    @property
    def synthetic_images(self) -> Path:
        """The product images the synthetic source draws (``raw.products.image_uri`` points here)."""
        return self.root / "synthetic_images"

    @property
    def landing(self) -> Path:
        """The current state of the delivered files: what a file-based source reads after the inbox."""
        return self.root / "landing"

    def partition(self, day: str) -> Path:
        """One delivery day's files under their landing names (the daily partitioned ingest)."""
        return self.root / "partitions" / day

    @property
    def failure_log(self) -> Path:
        """One JSON line per failed run (``failure_log.py``)."""
        return self.root / "ops" / "run_failures.jsonl"

    @property
    def snapshot(self) -> Path:
        """The read-only snapshot's default place (``ECOM_SNAPSHOT`` overrides it, see ``Settings``)."""
        return self.root / "snapshot.duckdb"
