"""A non-Brazilian shop without files: the synthetic source's US profile through ingest, then the calendar and
the spatial assets. The calendar must be American and the regions the real US states with their centroids."""

import dagster as dg
import duckdb
import pytest

from ecom_pipeline.config import Settings
from ecom_pipeline.definitions import build_definitions
from ecom_pipeline.geography import divisions
from ecom_pipeline.resources import build_resources
from ecom_pipeline.sources.synthetic import SyntheticSource


def test_us_profile_has_real_states_and_us_customers():
    src = SyntheticSource(n_orders=300, seed=3, country="US", write_images=False)
    customers = next(src.read("customers"))
    us = divisions("US").set_index("code")
    assert set(customers["state"]) <= set(us.index) and customers["state"].nunique() > 20
    assert customers["phone"].dropna().str.startswith("+1 ").all()
    regions = next(src.read("regions"))
    states = regions[regions.level == "state"].set_index("state")
    assert len(states) == 51 and states.loc["CA", "name"] == "California"
    assert abs(states.loc["CA", "lat"] - us.loc["CA", "lat"]) < 1e-3
    assert src.parse_hints("customers").geo_bounds == "world" and src.describe()["country"] == "US"
    with pytest.raises(ValueError, match="no synthetic country profile 'XX'"):
        SyntheticSource(n_orders=10, country="XX")


@pytest.mark.slow
def test_spatial_and_calendar_assets_on_the_us_profile(data_root, monkeypatch):
    monkeypatch.setenv("ECOM_DATA_SOURCE", "synthetic")
    monkeypatch.setenv("ECOM_SYNTHETIC_ORDERS", "1500")
    monkeypatch.setenv("ECOM_SYNTHETIC_COUNTRY", "US")
    settings = Settings.from_env()
    defs = build_definitions(settings)
    ingest = defs.resolve_job_def("ingest").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert ingest.success
    from ecom_pipeline.assets import spatial
    from ecom_pipeline.assets import timeseries as ts

    keys = [["features", k] for k in ("daily_series", "calendar", "regions", "region_flows", "region_knn_graph")]
    result = dg.materialize(list(ts.build().assets) + list(spatial.build().assets),
                            selection=[dg.AssetKey(k) for k in keys], resources=build_resources(settings))
    assert result.success
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        cal = con.execute("SELECT * FROM features.calendar").fetchdf().set_index("date")
        regs = con.execute("SELECT * FROM features.regions").fetchdf()
        knn = con.execute("SELECT * FROM features.region_knn_graph WHERE level = 'state'").fetchdf()
    finally:
        con.close()
    names = set(cal["holiday_name"].dropna())
    assert "Thanksgiving Day" in names and "Independence Day" in names and not any("Tiradentes" in n for n in names)
    assert (cal["country"] == "US").all() and cal.loc["2024-11-29", "is_black_friday"]
    assert cal.loc["2024-12-02", "is_cyber_monday"] and not cal["is_boxing_day"].any()
    us = divisions("US").set_index("code")
    states = regs[regs.level == "state"].set_index("state")
    assert set(states.index) <= set(us.index) and len(states) > 20
    assert states["resolution_source"].eq("staging.regions").all()  # the source's own region rows, kept
    assert (states[["lat", "lng"]] - us.loc[states.index, ["lat", "lng"]].to_numpy()).abs().max().max() < 1e-3
    assert list(regs[regs.level == "country"]["region_id"]) == ["country:US"]
    assert len(knn) > 0 and knn["src"].str.startswith("state:").all()
