"""Which data source feeds the raw layer, and the privacy key staging uses."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from ecom_pipeline.config import DEFAULT_DATA_ROOT
from ecom_pipeline.paths import DataPaths
from ecom_pipeline.sources import DEFAULT_CHUNK_ROWS, Source, make_source
from ecom_pipeline.sources.base import SourceError


class SourceBuildFailure(dg.Failure, SourceError):
    """A source that cannot be built: a ``SourceError`` (for callers outside Dagster) that is also a Dagster
    ``Failure`` with ``allow_retries=False``, so a step's retry policy does not re-run it."""

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None):
        dg.Failure.__init__(self, description=message, allow_retries=False)
        self.file, self.column = file, column  # as the SourceError it replaces
        self.args = (message,)


if TYPE_CHECKING:
    import pandas as pd


class SourceResource(dg.ConfigurableResource):
    """``kind``: synthetic (embedded default) | olist | mapped; see README, "Bring your own data"."""

    kind: str = "synthetic"
    data_dir: str = ""
    mapping: str = ""
    data_root: str = str(DEFAULT_DATA_ROOT)
    synthetic_orders: int = 5000
    synthetic_seed: int = 42
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    countries: str = ""  # ECOM_COUNTRY: the shop's ISO country code(s), comma-separated
    synthetic_country: str = "BR"  # ECOM_SYNTHETIC_COUNTRY: the synthetic source's country profile

    def build(self) -> Source:
        """The configured source, with the serving app's archived session events appended to ``events``.
        A source that cannot be built (missing data folder, missing or invalid
        mapping, unknown kind) fails the step at once, without the step's retries: trying again in a few
        seconds cannot make a folder appear, it only hides the cause behind retries."""
        from ecom_pipeline.sources.online_events import WithOnlineEvents

        layout = DataPaths(Path(self.data_root))
        try:
            base = make_source(
                self.kind,
                data_dir=Path(self.data_dir) if self.data_dir else None,
                mapping=Path(self.mapping) if self.mapping else None,
                image_dir=layout.synthetic_images,
                synthetic_orders=self.synthetic_orders,
                synthetic_seed=self.synthetic_seed,
                synthetic_country=self.synthetic_country,
            )
        except SourceError as exc:
            raise SourceBuildFailure(str(exc), file=exc.file, column=exc.column) from exc
        return WithOnlineEvents(base, layout.inbox_processed)

    @property
    def dataset_name(self) -> str:
        """The name model metrics are recorded under (the source's kind: synthetic, olist, mapped), without
        building the source: an inbox deployment archives each delivered file, so a training step must not
        need the mapping's files to be where the mapping points."""
        return self.kind.lower()

    def shop_countries(self, data_countries: pd.Series | None = None) -> tuple[str, ...]:
        """The shop's countries, most customers first: ECOM_COUNTRY, else the data's own country column
        (``data_countries``, one value per customer), else what the source implies (the synthetic profile's
        country, BR for Olist), else ``()``: no calendar country (the assets say so)."""
        from ecom_pipeline.geography import country_code

        if self.countries.strip():
            return tuple(c.strip().upper() for c in self.countries.split(",") if c.strip())
        if data_countries is not None and data_countries.notna().any():
            codes = data_countries.dropna().map(country_code).dropna()
            if len(codes):
                return tuple(codes.value_counts().index)
        if self.kind == "synthetic":
            return (self.synthetic_country.upper(),)
        if self.kind == "olist":
            return ("BR",)
        return ()


class PrivacyResource(dg.ConfigurableResource):
    """Keyed pseudonyms: the key comes from ``ECOM_PSEUDONYM_KEY`` (an EnvVar); only in local mode is one
    generated under ``data/`` when it is unset."""

    pseudonym_key: str = ""
    env: str = "local"
    data_root: str = str(DEFAULT_DATA_ROOT)

    def key(self) -> tuple[bytes, str | None]:
        """The key and, when it was generated or read from the local key file, a warning to log."""
        if self.pseudonym_key:
            return self.pseudonym_key.encode(), None
        from ecom_pipeline.cleaning.privacy import resolve_pseudonym_key

        return resolve_pseudonym_key(self.env, Path(self.data_root))
