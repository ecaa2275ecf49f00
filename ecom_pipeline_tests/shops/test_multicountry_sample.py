"""The multi-country sample shop (``docs/examples/sales_sample_multicountry.yaml`` on the shared
``sales_sample_multicountry`` export: 19 countries) through staging, then the assets that must agree on the
shop's countries and regions: the calendar, the daily series, the region table and the DP report.

The whole graph on both shared examples is measured by ``benchmarks/shared_examples.py`` (longer than a test
may take); this test covers the joins between those assets in seconds.  Skips when the dataset is absent.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ecom_pipeline.canonical import TABLE_ORDER
from ecom_pipeline.cleaning.staging import stage_table
from ecom_pipeline.config import Settings
from ecom_pipeline.geography import country_code
from ecom_pipeline.loading import load_raw_table
from ecom_pipeline.resources import build_resources
from ecom_pipeline.sources.mapped import MappedSource
from ecom_pipeline_tests.datasets import shared_dataset

REPO = Path(__file__).resolve().parents[2]
MAPPING = REPO / "docs" / "examples" / "sales_sample_multicountry.yaml"
SALES_DIR = shared_dataset("sales_sample_multicountry")

pytestmark = pytest.mark.skipif(
    not (SALES_DIR / "sales_data_sample.csv").is_file(),
    reason=f"multi-country sales sample not found at {SALES_DIR}",
)


def test_calendar_series_regions_and_dp_report_agree_on_the_shops_countries(data_root, monkeypatch):
    monkeypatch.setenv("ECOM_DATA_SOURCE", "mapped")
    monkeypatch.setenv("ECOM_DATA_DIR", str(SALES_DIR))
    monkeypatch.setenv("ECOM_MAPPING", str(MAPPING))
    settings = Settings.from_env()
    src = MappedSource.from_yaml(MAPPING, data_dir=SALES_DIR)
    con = duckdb.connect(str(settings.warehouse))
    for table in TABLE_ORDER:
        load_raw_table(con, src, table, load_id="L1")
        stage_table(con, table, hints=src.parse_hints(table), pseudonym_key=b"k" * 32)
    data_countries = {
        country_code(c) for (c,) in con.execute("SELECT DISTINCT country FROM staging.customers").fetchall()
    }
    con.close()
    assert len(data_countries) == 19 and None not in data_countries

    from ecom_pipeline.assets import sharing, spatial
    from ecom_pipeline.assets import timeseries as ts

    keys = [
        ["features", "daily_series"],
        ["features", "calendar"],
        ["features", "regions"],
        ["reports", "regional_demand_dp"],
    ]
    assets = list(ts.build().assets) + list(spatial.build().assets) + list(sharing.build().assets)
    result = dg.materialize(
        assets,
        selection=[dg.AssetKey(k) for k in keys],
        resources=build_resources(settings),
        run_config={"ops": {"reports__regional_demand_dp": {"config": {"seed": 7}}}},
    )
    assert result.success
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        cal = con.execute("SELECT * FROM features.calendar").fetchdf()
        regions = con.execute("SELECT region_id, level, country, lat, lng FROM features.regions").fetchdf()
        states = {
            s
            for (s,) in con.execute(
                "SELECT DISTINCT series_id FROM features.daily_series WHERE level = 'state'"
            ).fetchall()
        }
        dp_regions = {
            r for (r,) in con.execute("SELECT DISTINCT region FROM reports.regional_demand_dp").fetchall()
        }
    finally:
        con.close()
    cal_md = next(m for m in result.asset_materializations_for_node("features__calendar")).metadata
    # the calendar's countries are the data's (no Brazilian default), with each country's own holidays
    assert set(cal_md["countries"].value.split(", ")) == data_countries
    names = set(cal["holiday_name"].dropna().str.cat(sep="; ").split("; "))
    assert "US: Thanksgiving Day" in names, sorted(names)[:20]
    assert any(n.startswith("GB: ") and "Boxing Day" in n for n in names), sorted(names)[:20]
    assert not any("Tiradentes" in n for n in names)
    # regions: the data's countries, all placed
    assert set(regions.loc[regions.level == "country", "region_id"]) == {
        f"country:{c}" for c in data_countries
    }
    assert regions[["lat", "lng"]].notna().all().all()
    # a state series id is a region id (state:US-CA in a shop with several countries), so the ST-GCN's graph
    # and the forecasts join on them
    known = {s for s in states if not s.endswith(":unknown")}
    assert known and known <= set(regions["region_id"]), sorted(known - set(regions["region_id"]))[:5]
    assert any(s.startswith("state:US-") for s in known)
    # the DP report's grid: regions of the shop's own countries only (never a fixed Brazilian grid)
    dp_md = next(m for m in result.asset_materializations_for_node("reports__regional_demand_dp")).metadata
    level = dp_md["level"].value
    if level == "country":
        assert dp_regions == data_countries
    else:
        assert {r.split("-", 1)[0] for r in dp_regions} <= data_countries
