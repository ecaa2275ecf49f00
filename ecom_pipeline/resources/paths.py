"""The ``paths`` resource: the data root and the folders under it, for assets and sensors."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ecom_pipeline.config import DEFAULT_DATA_ROOT
from ecom_pipeline.paths import DataPaths


class PathsResource(dg.ConfigurableResource):
    """Built from ``Settings`` (``build_resources``): ``data_root`` = ``ECOM_DATA_ROOT``; ``snapshot`` =
    ``ECOM_SNAPSHOT`` when that is set, else the snapshot lives under the data root.  Assets and sensors ask
    this resource for a folder instead of joining names onto a data root themselves."""

    data_root: str = str(DEFAULT_DATA_ROOT)
    snapshot_path: str = ""  # "" = <data_root>/snapshot.duckdb

    @property
    def layout(self) -> DataPaths:
        return DataPaths(Path(self.data_root))

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def models(self) -> Path:
        return self.layout.models

    def report(self, name: str) -> Path:
        return self.layout.report(name)

    @property
    def inbox(self) -> Path:
        return self.layout.inbox

    @property
    def landing(self) -> Path:
        return self.layout.landing

    @property
    def failure_log(self) -> Path:
        return self.layout.failure_log

    @property
    def snapshot(self) -> Path:
        return Path(self.snapshot_path) if self.snapshot_path else self.layout.snapshot
