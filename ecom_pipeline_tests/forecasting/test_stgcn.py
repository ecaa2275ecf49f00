"""Spatio-temporal GCN forecaster: shapes, that information flows along graph edges only (and not at all in
the no-graph twin), the state graph, skip reasons, and the asset on a small warehouse."""

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from ecom_pipeline.ml.forecasting.lstm import LSTMConfig
from ecom_pipeline.ml.forecasting.series import calendar_features, covariate_matrix
from ecom_pipeline.ml.forecasting.stgcn import (
    GraphConfig,
    SpatioTemporalNet,
    STGCNForecaster,
    skip_reason,
    state_graph,
    stgcn_backtest,
)
from ecom_pipeline.ml.spatial.gcn import normalized_adjacency

SMALL = LSTMConfig(window=21, horizon=7, hidden=8, epochs=2, max_samples=200, stride=3)
CHAIN = pd.DataFrame({"src": ["state:A", "state:B"], "dst": ["state:B", "state:C"]})  # A - B - C, D alone
IDS = ["state:A", "state:B", "state:C", "state:D"]


@pytest.fixture(autouse=True)
def _one_thread():
    # a shared 2-core machine: torch's default threads fight the other test processes
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _panel(n=120, seed=0):
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2020-01-01", periods=n)
    Y = rng.poisson(10 * (1 + 0.4 * np.sin(2 * np.pi * np.arange(n) / 7)), size=(len(IDS), n)).astype(float)
    cov = covariate_matrix(calendar_features(dates[0], dates[-1] + pd.Timedelta(days=SMALL.horizon)))
    return dates, Y, cov


def test_state_graph_knn_plus_flows_induced_subgraph():
    flows = pd.DataFrame(
        {
            "src": ["state:A", "state:C", "state:A"],
            "dst": ["state:D", "state:D", "state:X"],
            "orders": [5, 2, 9],
        }
    )
    A = state_graph(IDS, CHAIN, flows, min_flow_orders=3)
    assert (A == A.T).all() and np.trace(A) == 0
    assert A[0, 1] == A[1, 2] == 1 and A[0, 3] == 1  # kNN chain + the A->D flow
    assert A[2, 3] == 0  # C->D flow below min_flow_orders; A->X leaves the selected states
    assert int(A.sum()) == 2 * 3


def test_net_and_forecaster_shapes():
    dates, Y, cov = _panel()
    a_hat = normalized_adjacency(state_graph(IDS, CHAIN))
    net = SpatioTemporalNet(a_hat, cov.shape[1], SMALL, GraphConfig(gcn_dim=4))
    q = net(
        torch.rand(5, 4, SMALL.window),
        torch.rand(5, SMALL.window, cov.shape[1]),
        torch.rand(5, SMALL.horizon, cov.shape[1]),
    )
    assert q.shape == (5, 4, SMALL.horizon, 3)
    f = STGCNForecaster(SMALL, a_hat).fit(Y, cov, 100)
    yhat, lo, hi = f.predict(Y, cov, 100)
    assert yhat.shape == lo.shape == hi.shape == (4, SMALL.horizon)
    assert (lo <= yhat).all() and (yhat <= hi).all() and (lo >= 0).all()
    assert np.isfinite(f.final_loss) and f.final_loss > 0


def test_information_flows_along_edges_only():
    """Changing state A's history moves the forecast of its neighbour B (and 2-hop C) in the ST-GCN, never of
    the isolated D; in the no-graph twin only A itself moves."""
    torch.manual_seed(0)
    cov_dim = 12
    x = torch.rand(1, 4, SMALL.window)
    ci, co = torch.rand(1, SMALL.window, cov_dim), torch.rand(1, SMALL.horizon, cov_dim)
    x2 = x.clone()
    x2[0, 0] += 3.0  # a burst of demand in state A

    def moved(A):
        torch.manual_seed(1)
        net = SpatioTemporalNet(normalized_adjacency(A), cov_dim, SMALL, GraphConfig()).eval()
        with torch.no_grad():
            return (net(x2, ci, co) - net(x, ci, co)).abs().amax(dim=(0, 2, 3)).numpy()

    graph = moved(state_graph(IDS, CHAIN))
    twin = moved(np.zeros((4, 4), dtype=np.float32))
    assert graph[0] > 0 and graph[1] > 1e-4 and graph[2] > 1e-6 and graph[3] == 0
    assert twin[0] > 0 and (twin[1:] == 0).all()


def test_backtest_twin_has_no_future_and_models_are_named():
    dates, Y, cov = _panel()
    A = state_graph(IDS, CHAIN)
    p, m, final = stgcn_backtest(IDS, dates, Y, cov, A, SMALL, folds=2)
    assert set(p["model"]) == {"stgcn"} and set(p["kind"]) == {"backtest", "future"}
    assert len(p[p.kind == "future"]) == 4 * SMALL.horizon and final is not None
    p2, m2, _ = stgcn_backtest(IDS, dates, Y, cov, A, SMALL, graph=False, folds=2, future=False)
    assert set(p2["model"]) == {"stgcn_no_graph"} and set(p2["kind"]) == {"backtest"}
    # same rolling origins for both
    assert sorted(p[p.kind == "backtest"]["origin"].unique()) == sorted(p2["origin"].unique())
    assert {"mase", "smape", "rmse", "coverage"} <= set(m2["metric"])


def test_skip_reasons():
    A = state_graph(IDS, CHAIN)
    assert "needs at least 3" in skip_reason(IDS[:2], 500, A[:2, :2], SMALL, 2)
    assert "too short" in skip_reason(IDS, 40, A, SMALL, 2)
    assert "no edges" in skip_reason(IDS, 500, np.zeros((4, 4)), SMALL, 2)
    assert skip_reason(IDS, 500, A, SMALL, 2) is None
    dates, Y, cov = _panel()
    with pytest.raises(ValueError, match="at least 3 states"):
        stgcn_backtest(IDS[:2], dates, Y[:2], cov, A[:2, :2], SMALL)


# ---------------------------------------------------------------- the asset on a small warehouse
STGCN_SMALL = {
    "n_states": 0,
    "horizon": 14,
    "folds": 2,
    "window": 28,
    "hidden": 8,
    "epochs_cpu": 2,
    "max_samples_cpu": 300,
    "gcn_dim": 4,
}


def _materialise(root, tables, stgcn_config, with_sarima=True):
    from ecom_pipeline.assets import spatial, spatiotemporal
    from ecom_pipeline.assets import timeseries as ts
    from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
    from ecom_pipeline.resources.io_manager import WarehouseIOManager
    from ecom_pipeline.resources.paths import PathsResource
    from ecom_pipeline_tests.forecasting.shop import write_staging

    wh = write_staging(root / "wh.duckdb", tables)
    resources = {
        "warehouse": WarehouseResource(path=str(wh)),
        "io_manager": WarehouseIOManager(database=str(wh)),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{root}/mlflow.db"),
        "compute": ComputeResource(device="cpu", threads=1),
        "source": SourceResource(kind="synthetic", data_root=str(root)),
        "paths": PathsResource(data_root=str(root)),
    }
    keys = [
        ["features", k] for k in ("daily_series", "calendar", "regions", "region_flows", "region_knn_graph")
    ]
    keys += (
        [["models", "sarima_backtest"], ["models", "stgcn_backtest"], ["serving", "forecasts"]]
        if with_sarima
        else [["models", "stgcn_backtest"]]
    )
    assets = list(ts.build().assets) + list(spatial.build().assets) + list(spatiotemporal.build().assets)
    ops = {
        "models__sarima_backtest": {
            "config": {
                "n_states": 3,
                "n_categories": 0,
                "folds": 2,
                "horizon": 14,
                "max_train_days": 120,
                "workers": 1,
            }
        },
        "models__stgcn_backtest": {"config": stgcn_config},
    }
    if not with_sarima:
        del ops["models__sarima_backtest"]
    result = dg.materialize(
        assets, selection=[dg.AssetKey(k) for k in keys], resources=resources, run_config={"ops": ops}
    )
    assert result.success
    return wh, result.asset_materializations_for_node("models__stgcn_backtest")[0].metadata


@pytest.mark.slow
def test_asset_on_small_warehouse(tmp_path):
    from ecom_pipeline_tests.forecasting.shop import make_shop

    wh, md = _materialise(tmp_path, make_shop(days=200, base_per_day=15), STGCN_SMALL)
    assert md["device"].value == "cpu" and "cpu" in md["training_path"].value and "skipped" not in md
    assert md["states"].value == 6 and md["edges"].value > 0
    assert set(md["mean_mase"].value) == {"stgcn", "stgcn_no_graph", "seasonal_naive", "sarima"}
    assert md["sarima_states"].value == 3
    con = duckdb.connect(str(wh), read_only=True)
    try:
        p = con.execute("SELECT * FROM models.stgcn_backtest").fetchdf()
        m = con.execute("SELECT * FROM ml.model_metrics WHERE model LIKE 'stgcn%'").fetchdf()
        f = con.execute("SELECT * FROM serving.forecasts").fetchdf()
    finally:
        con.close()
    assert set(p["model"]) == {"stgcn", "stgcn_no_graph"}
    assert len(p[(p.model == "stgcn") & (p.kind == "future")]) == 6 * 14
    assert {"seasonal_naive", "stgcn_no_graph"} <= set(
        m["baseline"]
    )  # + the best peer, from serving.forecasts
    assert {"mase", "smape", "rmse", "coverage"} <= set(m["metric"])
    assert (m["dataset"] == "synthetic:mean_over_states").any() and m["mlflow_run_id"].notna().all()
    # the ST-GCN competes in the gated model choice on the state series only; its twin never appears there
    st = m[(m.model == "stgcn") & m.dataset.str.startswith("synthetic:state:") & m.ci_low.notna()]
    assert len(st) and f[f.model == "stgcn"]["series_id"].str.startswith("state:").all()
    assert "stgcn_no_graph" not in set(f["model"])


@pytest.mark.slow
def test_asset_skips_with_a_reason(tmp_path):
    from ecom_pipeline_tests.forecasting.shop import make_shop

    (tmp_path / "few").mkdir()
    _, md = _materialise(tmp_path / "few", make_shop(days=200), STGCN_SMALL | {"n_states": 2}, False)
    assert "needs at least 3" in md["skipped"].value and md["dagster/row_count"].value == 0
    (tmp_path / "short").mkdir()
    _, md = _materialise(tmp_path / "short", make_shop(days=60), STGCN_SMALL, False)
    assert "too short" in md["skipped"].value
