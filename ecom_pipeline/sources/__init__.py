"""Data source adapters: each turns one kind of delivery into raw chunks of the canonical tables."""

from __future__ import annotations

from pathlib import Path

from ecom_pipeline.sources.base import DEFAULT_CHUNK_ROWS, Source, SourceError

__all__ = ["DEFAULT_CHUNK_ROWS", "Source", "SourceError", "make_source"]

SOURCE_NAMES = ("synthetic", "olist", "mapped")


def make_source(
    kind: str,
    *,
    data_dir: Path | None = None,
    mapping: Path | None = None,
    image_dir: Path | None = None,
    synthetic_orders: int = 5000,
    synthetic_seed: int = 42,
    synthetic_country: str = "BR",
) -> Source:
    """Build the configured source, with an error that says what is missing.  ``image_dir``: where the
    synthetic source writes its product images (``DataPaths.synthetic_images``); None draws none."""
    kind = kind.lower()
    if kind == "synthetic":
        from ecom_pipeline.sources.synthetic import SyntheticSource

        return SyntheticSource(
            n_orders=synthetic_orders, seed=synthetic_seed, image_dir=image_dir, country=synthetic_country
        )
    if kind == "olist":
        if data_dir is None:
            raise SourceError("ECOM_DATA_SOURCE=olist needs ECOM_DATA_DIR pointing at the Olist CSV folder")
        from ecom_pipeline.sources.olist import OlistSource

        return OlistSource(data_dir)
    if kind == "mapped":
        if mapping is None:
            raise SourceError("ECOM_DATA_SOURCE=mapped needs ECOM_MAPPING pointing at a YAML mapping file")
        from ecom_pipeline.sources.mapped import MappedSource

        return MappedSource.from_yaml(mapping, data_dir=data_dir)
    raise SourceError(f"unknown ECOM_DATA_SOURCE {kind!r}; choose one of {', '.join(SOURCE_NAMES)}")
