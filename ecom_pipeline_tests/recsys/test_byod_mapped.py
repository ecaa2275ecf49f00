"""Bring-your-own-data: the recommender and user groups on the `mapped` source with only a retail orders
export.

Runs the real `ingest` job on `docs/examples/retail_orders.yaml` (one line-level CSV: no reviews, no events,
no images) into a tmp data root, then materialises the `recommender` and `users` groups with the
definitions' own resources.
"""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ecom_pipeline.config import Settings
from ecom_pipeline.definitions import build_definitions

MAPPING = Path(__file__).resolve().parents[2] / "docs" / "examples" / "retail_orders.yaml"


@pytest.fixture
def mapped_env(data_root, monkeypatch):
    if not MAPPING.exists():
        pytest.skip(f"example mapping not found at {MAPPING}")
    monkeypatch.setenv("ECOM_DATA_SOURCE", "mapped")
    monkeypatch.setenv("ECOM_MAPPING", str(MAPPING))
    return data_root


def _metadata(result, name: str) -> dict:
    mats = {tuple(e.asset_key.path): e for e in result.get_asset_materialization_events()}
    key = next(k for k in mats if k[-1] == name)
    return {
        k: getattr(v, "value", v) for k, v in mats[key].event_specific_data.materialization.metadata.items()
    }


def test_recommender_and_users_run_on_an_orders_only_mapped_export(mapped_env):
    settings = Settings.from_env()
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    ingest = defs.resolve_job_def("ingest").execute_in_process(instance=instance, raise_on_error=False)
    assert ingest.success

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    counts = {
        t: con.execute(f"SELECT count(*) FROM staging.{t}").fetchone()[0]
        for t in ("orders", "order_items", "customers", "products", "reviews", "events")
    }
    con.close()
    assert counts["orders"] > 0 and counts["order_items"] > 0 and counts["products"] > 0
    assert counts["reviews"] == 0 and counts["events"] == 0, counts

    selection = dg.AssetSelection.groups("recommender", "users")
    result = dg.materialize(
        list(defs.assets),
        selection=selection,
        resources=defs.resources,
        instance=instance,
        raise_on_error=False,
    )
    assert result.success, [e.event_specific_data for e in result.all_events if e.is_failure]
    done = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert {
        "interactions",
        "recommender_evaluation",
        "recommendations",
        "related_items",
        "user_profiles",
        "repurchase_scores",
    } <= done, done

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    recs = con.execute("SELECT * FROM serving.recommendations").fetchdf()
    profiles = con.execute("SELECT * FROM serving.user_profiles").fetchdf()
    customers = {r[0] for r in con.execute("SELECT customer_id FROM staging.customers").fetchall()}
    con.close()
    assert len(recs) > 0 and recs["explanation"].notna().all() and (recs["explanation"].str.len() > 0).all()
    assert set(recs["customer_id"]) <= customers
    assert len(profiles) == len(customers)
    assert "segment_name" in profiles and profiles["segment_name"].notna().all()

    # the metadata says which optional inputs were missing
    assert "no events" in _metadata(result, "interactions")["notes"]
    notes = _metadata(result, "user_profiles")["notes"]
    assert "no reviews" in notes and "no events" in notes
    # no images → no product embeddings: related items say they did without them
    assert "absent" in _metadata(result, "related_items")["product_embeddings"]
