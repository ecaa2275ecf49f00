"""The warehouse layer: plain DuckDB functions (no Dagster, no ``resources``) that assets, ``ml`` and
tools share: table read/replace/upsert, fingerprints, identifier quoting.  Dagster resources wrap it."""
