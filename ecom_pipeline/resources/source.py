"""Which data source feeds the raw layer, and the privacy key staging uses."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from ecom_pipeline.sources import DEFAULT_CHUNK_ROWS, Source, make_source


class SourceResource(dg.ConfigurableResource):
    """``kind``: synthetic (embedded default) | olist | mapped; see README, "Bring your own data"."""

    kind: str = "synthetic"
    data_dir: str = ""
    mapping: str = ""
    data_root: str = "data"
    synthetic_orders: int = 5000
    synthetic_seed: int = 42
    chunk_rows: int = DEFAULT_CHUNK_ROWS

    def build(self) -> Source:
        """The configured source, with the serving app's archived session events appended to ``events``."""
        from ecom_pipeline.sources.online_events import WithOnlineEvents

        return WithOnlineEvents(self._build_base(), self.data_root)

    def _build_base(self) -> Source:
        return make_source(
            self.kind,
            data_dir=Path(self.data_dir) if self.data_dir else None,
            mapping=Path(self.mapping) if self.mapping else None,
            data_root=Path(self.data_root),
            synthetic_orders=self.synthetic_orders,
            synthetic_seed=self.synthetic_seed,
        )


class PrivacyResource(dg.ConfigurableResource):
    """Keyed pseudonyms: the key comes from ``ECOM_PSEUDONYM_KEY`` (an EnvVar); only in local mode is one
    generated under ``data/`` when it is unset."""

    pseudonym_key: str = ""
    env: str = "local"
    data_root: str = "data"

    def key(self) -> tuple[bytes, str | None]:
        """The key and, when it was generated or read from the local key file, a warning to log."""
        if self.pseudonym_key:
            return self.pseudonym_key.encode(), None
        from ecom_pipeline.cleaning.privacy import resolve_pseudonym_key

        return resolve_pseudonym_key(self.env, Path(self.data_root))
