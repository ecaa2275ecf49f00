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
    assert abs(float(states.loc["CA", "lat"]) - us.loc["CA", "lat"]) < 1e-3  # raw text, 6 decimals
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

    keys = [
        ["features", k] for k in ("daily_series", "calendar", "regions", "region_flows", "region_knn_graph")
    ]
    result = dg.materialize(
        list(ts.build().assets) + list(spatial.build().assets),
        selection=[dg.AssetKey(k) for k in keys],
        resources=build_resources(settings),
    )
    assert result.success
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        cal = con.execute("SELECT * FROM features.calendar").fetchdf().set_index("date")
        regs = con.execute("SELECT * FROM features.regions").fetchdf()
        knn = con.execute("SELECT * FROM features.region_knn_graph WHERE level = 'state'").fetchdf()
    finally:
        con.close()
    names = set(cal["holiday_name"].dropna())
    assert (
        "Thanksgiving Day" in names
        and "Independence Day" in names
        and not any("Tiradentes" in n for n in names)
    )
    assert (cal["country"] == "US").all() and cal.loc["2024-11-29", "is_black_friday"]
    assert cal.loc["2024-12-02", "is_cyber_monday"] and not cal["is_boxing_day"].any()
    us = divisions("US").set_index("code")
    states = regs[regs.level == "state"].set_index("state")
    assert set(states.index) <= set(us.index) and len(states) > 20
    assert states["resolution_source"].eq("staging.regions").all()  # the source's own region rows, kept
    assert (states[["lat", "lng"]] - us.loc[states.index, ["lat", "lng"]].to_numpy()).abs().max().max() < 1e-3
    assert list(regs[regs.level == "country"]["region_id"]) == ["country:US"]
    assert len(knn) > 0 and knn["src"].str.startswith("state:").all()


@pytest.mark.slow
def test_country_only_shop_gets_country_regions_and_a_named_stgcn_skip(tmp_path):
    """Like the UK online shop: customers carry only a country name, sellers no location at all."""
    from ecom_pipeline.assets import spatial, spatiotemporal
    from ecom_pipeline.assets import timeseries as ts
    from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
    from ecom_pipeline.resources.io_manager import WarehouseIOManager
    from ecom_pipeline.resources.paths import PathsResource
    from ecom_pipeline_tests.forecasting.shop import make_shop, write_staging

    wh = write_staging(tmp_path / "wh.duckdb", make_shop(days=150, base_per_day=8))
    country = {
        "SP": "United Kingdom",
        "RJ": "France",
        "MG": "Germany",
        "RS": "EIRE",
        "BA": "Spain",
        "PR": "Unspecified",
    }
    con = duckdb.connect(str(wh))
    con.execute(
        "UPDATE staging.customers SET country = CASE state "
        + " ".join(f"WHEN '{s}' THEN '{c}'" for s, c in country.items())
        + " END, state = NULL, city = NULL, zip_prefix = NULL, lat = NULL, lng = NULL"
    )
    con.execute("DELETE FROM staging.regions")  # the shop ships no region table
    con.execute(
        "UPDATE staging.sellers SET state = NULL, city = NULL, zip_prefix = NULL, lat = NULL, lng = NULL"
    )
    n_unspecified = con.execute(
        "SELECT count(*) FROM staging.customers WHERE country = 'Unspecified'"
    ).fetchone()[0]
    con.close()
    res = {
        "warehouse": WarehouseResource(path=str(wh)),
        "io_manager": WarehouseIOManager(database=str(wh)),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
        "compute": ComputeResource(device="cpu", threads=1),
        "source": SourceResource(kind="mapped", countries="GB", data_root=str(tmp_path)),
        "paths": PathsResource(data_root=str(tmp_path)),
    }
    keys = [
        ["features", k] for k in ("daily_series", "calendar", "regions", "region_flows", "region_knn_graph")
    ]
    keys.append(["models", "stgcn_backtest"])
    result = dg.materialize(
        list(ts.build().assets) + list(spatial.build().assets) + list(spatiotemporal.build().assets),
        selection=[dg.AssetKey(k) for k in keys],
        resources=res,
    )
    assert result.success
    md = _regions_metadata(result)
    assert md["customers_unresolved"].value == n_unspecified > 0
    assert md["customers_unresolved_reasons"].value == {"unknown country": n_unspecified}
    stgcn = result.asset_materializations_for_node("models__stgcn_backtest")[0].metadata
    assert "no first-level divisions" in stgcn["skipped"].value and "country" in stgcn["skipped"].value
    con = duckdb.connect(str(wh), read_only=True)
    regs = con.execute("SELECT * FROM features.regions").fetchdf()
    cal = con.execute("SELECT * FROM features.calendar").fetchdf()
    knn = con.execute("SELECT * FROM features.region_knn_graph").fetchdf()
    con.close()
    assert set(regs["level"]) == {"country"}
    assert set(regs["region_id"]) == {"country:GB", "country:FR", "country:DE", "country:IE", "country:ES"}
    gb = regs.set_index("region_id").loc["country:GB"]
    assert abs(gb["lat"] - 53) < 2 and abs(gb["lng"] + 2) < 2 and gb["resolution_source"] == "country"
    assert gb["orders"] > 0 and len(knn) > 0 and (knn["level"] == "country").all()
    assert (cal["country"] == "GB").all() and "Spring Bank Holiday" in set(cal["holiday_name"].dropna())


def _regions_metadata(result) -> dict:
    """features.regions is one output of the located_features step (with the series and the flows)."""
    key = dg.AssetKey(["features", "regions"])
    return next(
        m for m in result.asset_materializations_for_node("located_features") if m.asset_key == key
    ).metadata


@pytest.mark.slow
def test_mapped_us_export_without_coordinates_gets_state_regions(data_root, monkeypatch):
    """The documented US export (city, state, postal code, no coordinates) with ECOM_COUNTRY=US: customers are
    placed at their city, regions are US states, and the DP report's regions are the shop's own."""
    from pathlib import Path

    from ecom_pipeline.assets import sharing, spatial

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "retail_orders.yaml"
    monkeypatch.setenv("ECOM_DATA_SOURCE", "mapped")
    monkeypatch.setenv("ECOM_MAPPING", str(example))
    monkeypatch.setenv("ECOM_COUNTRY", "US")
    settings = Settings.from_env()
    ingest = (
        build_definitions(settings)
        .resolve_job_def("ingest")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral())
    )
    assert ingest.success
    keys = [["features", "regions"], ["features", "region_knn_graph"], ["reports", "regional_demand_dp"]]
    result = dg.materialize(
        list(spatial.build().assets) + list(sharing.build().assets),
        selection=[dg.AssetKey(k) for k in keys],
        resources=build_resources(settings),
    )
    assert result.success
    md = _regions_metadata(result)
    assert md["customers_unresolved"].value == 0 and md["countries"].value == "US"
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        regs = con.execute("SELECT * FROM features.regions").fetchdf()
        dp = con.execute("SELECT * FROM reports.regional_demand_dp").fetchdf()
    finally:
        con.close()
    states = regs[regs.level == "state"].set_index("state")
    assert set(states.index) <= set(divisions("US")["code"]) and {"MA", "GA", "WA"} <= set(states.index)
    ma = states.loc["MA"]  # every MA customer is in Cambridge: the centroid is Cambridge's
    assert (
        ma["resolution_source"] == "city" and abs(ma["lat"] - 42.37) < 0.05 and ma["name"] == "Massachusetts"
    )
    assert set(regs[regs.level == "country"]["region_id"]) == {"country:US"}
    assert (
        len(dp)
        and set(dp["region"]) <= set(divisions("US")["code"]) | {"US"}
        and "SP" not in set(dp["region"])
    )
