"""ECOM_DUCKDB_MEMORY_LIMIT defaults to a share of the machine split over the steps that run at once."""

from __future__ import annotations

import duckdb
import pytest

from ecom_pipeline.config import duckdb_memory_limit, machine_memory_bytes
from ecom_pipeline.resources.warehouse import duckdb_config


def _mb(limit: str) -> int:
    assert limit.endswith("MiB")
    return int(limit[:-3])


def test_default_is_the_share_over_concurrent_steps(monkeypatch):
    for name in ("ECOM_DUCKDB_MEMORY_LIMIT", "ECOM_DUCKDB_MEMORY_SHARE", "ECOM_MAX_CONCURRENT"):
        monkeypatch.delenv(name, raising=False)
    total_mb = machine_memory_bytes() / 2**20
    two_steps = _mb(duckdb_memory_limit())
    assert two_steps == max(256, int(total_mb * 0.5 / 2))
    monkeypatch.setenv("ECOM_MAX_CONCURRENT", "4")
    monkeypatch.setenv("ECOM_DUCKDB_MEMORY_SHARE", "0.8")
    assert _mb(duckdb_memory_limit()) == max(256, int(total_mb * 0.8 / 4))
    # the connection really gets it (DuckDB shows it in GiB with one decimal, truncated)
    con = duckdb.connect(config=duckdb_config())
    shown = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    value, unit = shown.split()
    mib = float(value) * {"MiB": 1, "GiB": 1024}[unit]
    assert abs(mib - _mb(duckdb_memory_limit())) / mib < 0.05


def test_explicit_limit_wins_and_bad_share_is_an_error(monkeypatch):
    monkeypatch.setenv("ECOM_DUCKDB_MEMORY_LIMIT", "3GB")
    assert duckdb_memory_limit() == "3GB" and duckdb_config()["memory_limit"] == "3GB"
    assert duckdb_config(memory_limit="1GB")["memory_limit"] == "1GB"
    monkeypatch.delenv("ECOM_DUCKDB_MEMORY_LIMIT")
    monkeypatch.setenv("ECOM_DUCKDB_MEMORY_SHARE", "1.5")
    with pytest.raises(ValueError, match="ECOM_DUCKDB_MEMORY_SHARE"):
        duckdb_memory_limit()
