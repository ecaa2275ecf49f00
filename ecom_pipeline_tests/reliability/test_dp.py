"""Differentially private regional report: noise scale, clipping, non-negativity, the asset on a warehouse."""

from __future__ import annotations

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.dp import (
    REPORT_COLUMNS,
    DPConfig,
    choose_level,
    clip_contributions,
    dp_regional_report,
    noise_scales,
    orders_by_region,
    public_regions,
    true_totals,
    utility,
)

BR_STATES = public_regions("state", ("BR",))  # the 27 UFs, from the offline reference data

JAN, FEB = pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01")


def _orders(rows):
    return pd.DataFrame(rows, columns=["customer_id", "region", "month", "revenue"])


def _sp_errors(cfg: DPConfig, n_months: int = 400):
    """Noise on one large cell per month (far from 0, so clamping never bites): n_months independent draws."""
    months = list(pd.date_range("1990-01-01", periods=n_months, freq="MS"))
    orders = _orders([(f"c{i}", "SP", m, 100.0) for m in months for i in range(150)])
    truth = clip_contributions(orders, cfg.max_orders_per_customer, cfg.max_revenue_per_customer)
    rep = dp_regional_report(orders, cfg, months=months, regions=BR_STATES, rng=np.random.default_rng(7))
    sp = rep[rep["region"] == "SP"].merge(truth, on=["region", "month"], suffixes=("", "_true"))
    assert len(sp) == n_months
    return sp["orders"].astype(float) - sp["orders_true"], sp["revenue"].astype(float) - sp["revenue_true"]


def test_noise_scale_matches_sensitivity_over_epsilon():
    """Empirical variance of the noise over many draws = 2 b^2 with b = C / eps_share, per measure."""
    cfg = DPConfig(
        epsilon=0.5,
        orders_share=0.4,
        max_orders_per_customer=2,
        max_revenue_per_customer=300.0,
        suppress_below_noise_scales=-1e18,
    )  # no suppression: every noisy cell is visible
    b_orders, b_revenue = noise_scales(cfg)
    assert b_orders == pytest.approx(2 / 0.2) and b_revenue == pytest.approx(300 / 0.3)
    err_o, err_r = _sp_errors(cfg)
    # 400 draws of a Laplace: the sample variance is within ~20 % of 2 b^2 (its sd is ~11 %)
    assert err_o.var() == pytest.approx(2 * b_orders**2, rel=0.25)
    assert err_r.var() == pytest.approx(2 * b_revenue**2, rel=0.25)
    assert abs(err_o.mean()) < 4 * b_orders * np.sqrt(2 / 400) + 0.5  # unbiased (rounding aside)
    # a 10x larger epsilon gives a 10x smaller spread
    tight = DPConfig(
        epsilon=5.0,
        orders_share=0.4,
        max_orders_per_customer=2,
        max_revenue_per_customer=300.0,
        suppress_below_noise_scales=-1e18,
    )
    _, err_r_tight = _sp_errors(tight)
    assert err_r_tight.std() == pytest.approx(err_r.std() / 10, rel=0.3)


def test_clipping_bounds_one_customers_contribution():
    base = _orders([(f"c{i}", "RJ", JAN, 100.0) for i in range(20)])
    whale = _orders([("whale", "RJ", JAN, 50_000.0)] * 40 + [("whale", "RJ", FEB, 10.0)])
    without = clip_contributions(base, 3, 1000.0).set_index(["region", "month"])
    with_whale = clip_contributions(pd.concat([base, whale]), 3, 1000.0).set_index(["region", "month"])
    diff = with_whale.sub(without, fill_value=0)
    # 40 orders worth 2M in January count as 3 orders and 1,000; February's single order as 1 and 10
    assert diff.loc[("RJ", JAN)].tolist() == [3.0, 1000.0]
    assert diff.loc[("RJ", FEB)].tolist() == [1.0, 10.0]
    # the unclipped truth is what utility is measured against
    assert (
        true_totals(pd.concat([base, whale])).set_index(["region", "month"]).loc[("RJ", JAN), "orders"] == 60
    )


def test_output_never_negative_and_fixed_grid_with_suppression():
    orders = _orders([("a", "AC", JAN, 10.0), ("b", "SP", FEB, 20.0)])
    cfg = DPConfig(epsilon=0.1)  # huge noise (b = 60 orders): many negative draws to clamp
    for seed in range(8):
        rep = dp_regional_report(orders, cfg, regions=BR_STATES, rng=np.random.default_rng(seed))
        assert list(rep.columns) == REPORT_COLUMNS
        # every state x every month of the period, whether or not anyone ordered there
        assert len(rep) == len(BR_STATES) * 2 and set(rep["region"]) == set(BR_STATES)
        assert (rep["orders"].dropna() >= 0).all() and (rep["revenue"].dropna() >= 0).all()
        assert cfg.suppress_threshold == pytest.approx(120.0)
        assert (rep["orders"].dropna() >= 119).all()  # below 2 noise scales -> suppressed, not published
        assert rep.loc[rep["suppressed"], ["orders", "revenue"]].isna().all().all()
        assert rep["suppressed"].any() and (~rep["suppressed"]).any()


def test_unknown_regions_are_not_published_and_bad_config_is_refused():
    rep = dp_regional_report(
        _orders([("a", "XX", JAN, 10.0)]), DPConfig(), regions=BR_STATES, rng=np.random.default_rng(0)
    )
    assert "XX" not in set(rep["region"])
    with pytest.raises(ValueError, match="epsilon"):
        DPConfig(epsilon=0)
    with pytest.raises(ValueError, match="level"):
        dp_regional_report(_orders([]), DPConfig(), level="city", regions=BR_STATES)


def test_utility_improves_with_epsilon():
    rng = np.random.default_rng(1)
    states = rng.choice(["SP", "RJ", "MG", "BA", "RS"], p=[0.5, 0.2, 0.15, 0.1, 0.05], size=4000)
    months = rng.choice(pd.date_range("2024-01-01", periods=6, freq="MS"), size=4000)
    orders = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(4000)],
            "region": states,
            "month": months,
            "revenue": rng.gamma(2.0, 80.0, 4000),
        }
    )
    truth = true_totals(orders)
    low = utility(
        dp_regional_report(orders, DPConfig(epsilon=0.1), regions=BR_STATES, rng=np.random.default_rng(2)),
        truth,
    )
    high = utility(
        dp_regional_report(orders, DPConfig(epsilon=10.0), regions=BR_STATES, rng=np.random.default_rng(2)),
        truth,
    )
    assert high["mae_orders"] < low["mae_orders"] and high["rel_err_orders_large"] < 0.05
    assert high["rank_corr_regions"] > 0.95


def test_orders_by_region_joins_customers_and_item_value():
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "customer_id": ["a", "b", "zz"],
            "purchased_at": pd.to_datetime(["2024-01-05", "2024-02-10", "2024-02-11"]),
        }
    )
    customers = pd.DataFrame(
        {"customer_id": ["a", "b"], "state": ["SP", "RJ"], "zip_prefix": ["01310", "20040"]}
    )
    items = pd.DataFrame(
        {"order_id": ["o1", "o1", "o2"], "price": [10.0, 5.0, 7.0], "freight": [1.0, 1.0, None]}
    )
    state = orders_by_region(orders, customers, items, countries=("BR",))
    assert state.to_dict("list") == {
        "customer_id": ["a", "b"],
        "region": ["SP", "RJ"],
        "month": [JAN, FEB],
        "revenue": [17.0, 7.0],
    }
    assert orders_by_region(orders, customers, items, "zip3", ("BR",))["region"].tolist() == ["013", "200"]
    # without any country the state codes cannot be placed: nothing is guessed
    assert orders_by_region(orders, customers, items).empty


# ---------------------------------------------------------------------------------------------- the asset
def _run_asset(root, staging: dict[str, pd.DataFrame], countries: str = "", level: str = "auto"):
    from ecom_pipeline.assets.sharing import regional_demand_dp
    from ecom_pipeline.resources import SourceResource, WarehouseResource
    from ecom_pipeline.resources.paths import PathsResource

    root.mkdir(parents=True)
    wh = root / "wh.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE SCHEMA staging")
    for name, frame in staging.items():
        con.register("_f", frame)
        con.execute(f"CREATE TABLE staging.{name} AS SELECT * FROM _f")
        con.unregister("_f")
    con.close()
    result = dg.materialize(
        [regional_demand_dp],
        resources={
            "warehouse": WarehouseResource(path=str(wh)),
            "source": SourceResource(data_root=str(root), kind="mapped", countries=countries or "BR"),
            "paths": PathsResource(data_root=str(root)),
        },
        run_config={
            "ops": {"reports__regional_demand_dp": {"config": {"epsilon": 1.0, "seed": 3, "level": level}}}
        },
    )
    assert result.success
    con = duckdb.connect(str(wh), read_only=True)
    try:
        table = con.execute("SELECT * FROM reports.regional_demand_dp").fetchdf()
    finally:
        con.close()
    return table, pd.read_csv(root / "reports" / "regional_demand_dp.csv")


def test_asset_on_a_small_warehouse_and_on_empty_input(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    orders = pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "customer_id": [f"c{i % 200}" for i in range(n)],
            "purchased_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 90, n), "D"),
        }
    )
    customers = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(200)],
            "state": rng.choice(["SP", "RJ", "MG"], 200),
            "zip_prefix": ["01310"] * 200,
        }
    )
    items = pd.DataFrame({"order_id": orders["order_id"], "price": rng.gamma(2, 50, n), "freight": 10.0})
    table, csv = _run_asset(tmp_path / "a", {"orders": orders, "customers": customers, "order_items": items})
    # January and February are closed; March holds the latest order, so it is not released yet
    assert len(table) == len(BR_STATES) * 2 and len(csv) == len(table)
    assert set(table.columns) == set(REPORT_COLUMNS)
    sp = table[(table["region"] == "SP") & ~table["suppressed"]]
    assert len(sp) == 2 and (sp["orders"] > 0).all()
    assert (table["epsilon"] == 1.0).all()

    empty = {
        k: v.iloc[0:0] for k, v in {"orders": orders, "customers": customers, "order_items": items}.items()
    }
    table, csv = _run_asset(tmp_path / "b", empty)
    assert len(table) == 0 and list(csv.columns) == REPORT_COLUMNS


def test_grid_is_the_shops_own_regions_never_brazil(tmp_path):
    """A UK-style shop whose customers carry only a country: level=auto falls back to countries, the grid is
    the shop's countries, and no Brazilian state appears."""
    rng = np.random.default_rng(1)
    n = 900
    cc = rng.choice(["United Kingdom", "France", "EIRE"], 300, p=[0.8, 0.15, 0.05])
    customers = pd.DataFrame({"customer_id": [f"c{i}" for i in range(300)], "country": cc})
    orders = pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "customer_id": [f"c{i % 300}" for i in range(n)],
            "purchased_at": pd.Timestamp("2011-01-01") + pd.to_timedelta(rng.integers(0, 90, n), "D"),
        }
    )
    items = pd.DataFrame({"order_id": orders["order_id"], "price": rng.gamma(2, 20, n), "freight": 0.0})
    table, _ = _run_asset(
        tmp_path / "uk",
        {"orders": orders, "customers": customers, "order_items": items},
        countries="GB,FR,IE",
    )
    assert set(table["level"]) == {"country"} and set(table["region"]) == {"GB", "FR", "IE"}
    assert len(table) == 3 * 2 and not table[table.region == "GB"]["suppressed"].any()
    # a US shop with states: auto publishes states, and the grid is the 51 US divisions
    us = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(300)],
            "state": rng.choice(["CA", "NY", "TX"], 300),
            "city": None,
        }
    )
    table, _ = _run_asset(
        tmp_path / "us", {"orders": orders, "customers": us, "order_items": items}, countries="US"
    )
    assert (
        set(table["level"]) == {"state"}
        and len(set(table["region"])) == 51
        and "SP" not in set(table["region"])
    )
    ca = table[table.region == "CA"]
    assert len(ca) == 2 and not ca["suppressed"].any()


def test_each_month_is_released_once_and_published_unchanged(tmp_path):
    """The daily scoring job rebuilds the report: a released month keeps its noisy numbers (fresh noise each
    day would spend its budget again), the open month is released once a later month has orders, late
    orders for a released month change nothing, and changed settings release nothing new until rerelease."""
    from ecom_pipeline.assets.sharing import regional_demand_dp
    from ecom_pipeline.dp import RELEASES
    from ecom_pipeline.resources import SourceResource, WarehouseResource
    from ecom_pipeline.resources.paths import PathsResource

    rng = np.random.default_rng(5)
    n = 900
    customers = pd.DataFrame(
        {"customer_id": [f"c{i}" for i in range(300)], "state": rng.choice(["SP", "RJ"], 300), "city": None}
    )
    orders = pd.DataFrame(
        {
            "order_id": [f"o{i}" for i in range(n)],
            "customer_id": [f"c{i % 300}" for i in range(n)],
            "purchased_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 60, n), "D"),
        }
    )  # January and February (open)
    items = pd.DataFrame({"order_id": orders["order_id"], "price": 20.0, "freight": 0.0})
    wh = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE SCHEMA staging")
    for name, frame in {"orders": orders, "customers": customers, "order_items": items}.items():
        con.register("_f", frame)
        con.execute(f"CREATE TABLE staging.{name} AS SELECT * FROM _f")
        con.unregister("_f")
    con.close()

    def run(seed: int, **config):
        result = dg.materialize(
            [regional_demand_dp],
            resources={
                "warehouse": WarehouseResource(path=str(wh)),
                "source": SourceResource(data_root=str(tmp_path), kind="mapped", countries="BR"),
                "paths": PathsResource(data_root=str(tmp_path)),
            },
            run_config={"ops": {"reports__regional_demand_dp": {"config": {"seed": seed, **config}}}},
        )
        assert result.success
        md = result.asset_materializations_for_node("reports__regional_demand_dp")[0].metadata
        with duckdb.connect(str(wh), read_only=True) as c:
            table = c.execute("SELECT * FROM reports.regional_demand_dp ORDER BY region, month").fetchdf()
            ledger_rows = c.execute(f"SELECT count(*) FROM {RELEASES}").fetchone()[0]
        return table, md, ledger_rows

    def add(sql: str):
        with duckdb.connect(str(wh)) as c:
            c.execute(sql)

    first, md, rows = run(seed=1)
    assert set(first["month"].dt.month) == {1} and rows == len(first) == len(BR_STATES)
    assert md["months_released_now"].value == ["2024-01-01"]
    assert md["open_month_not_released"].value == "2024-02-01"
    again, md, _ = run(seed=2)  # another day, other noise: nothing closed, the release is published as is
    pd.testing.assert_frame_equal(again, first)
    assert md["months_released_now"].value == []
    # a March order closes February; a late January order does not change the released January
    add(
        "INSERT INTO staging.orders VALUES ('late', 'c1', TIMESTAMP '2024-01-15'), "
        "('m1', 'c2', TIMESTAMP '2024-03-02')"
    )
    later, md, rows = run(seed=3)
    assert md["months_released_now"].value == ["2024-02-01"] and rows == len(later) == 2 * len(BR_STATES)
    pd.testing.assert_frame_equal(later[later["month"].dt.month == 1].reset_index(drop=True), first)
    # changed settings: the release stays published, nothing new is released, the log says why
    changed, md, _ = run(seed=4, epsilon=2.0)
    pd.testing.assert_frame_equal(changed, later)
    assert "settings changed" in md["release"].value and md["months_released_now"].value == []
    # rerelease: every closed month again, under the new settings
    redone, md, rows = run(seed=4, epsilon=2.0, rerelease=True)
    assert (redone["epsilon"] == 2.0).all() and rows == len(redone) == 2 * len(BR_STATES)
    assert md["months_released_now"].value == ["2024-01-01", "2024-02-01"]


def test_choose_level_prefers_the_finest_populated_level():
    cfg = DPConfig()  # threshold: 12 clipped orders per cell
    many = _orders([(f"c{i}", "SP" if i % 2 else "RJ", JAN, 10.0) for i in range(100)])
    few = _orders([(f"c{i}", f"S{i}", JAN, 10.0) for i in range(100)])  # one customer per state
    country = _orders([(f"c{i}", "BR", JAN, 10.0) for i in range(100)])
    assert choose_level({"state": many, "country": country}, cfg)[0] == "state"
    level, shares = choose_level({"state": few, "country": country}, cfg)
    assert level == "country" and shares == {"state": 0.0, "country": 1.0}
