"""Sequence recommender: learns a planted ORDER pattern that popularity and co-occurrence cannot, the 'repeat'
baseline ranks a customer's own purchases, the safe artifact round-trips, and the asset gates per segment."""

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from ecom_pipeline.ml.recsys.data import build_data
from ecom_pipeline.ml.recsys.interactions import build_interactions
from ecom_pipeline.ml.recsys.planted import planted_sequences
from ecom_pipeline.ml.recsys.sequence import (
    RepeatPurchases,
    SASRecNet,
    evaluate_sequence_models,
    gate_segments,
    user_baskets,
)
from ecom_pipeline.resources import ComputeResource, MLflowResource, SourceResource, WarehouseResource
from ecom_pipeline.resources.io_manager import WarehouseIOManager
from ecom_pipeline.resources.paths import PathsResource
from ecom_pipeline_tests.recsys.test_assets import write_staging

SMALL = {
    "dim": 32,
    "max_len": 16,
    "layers": 1,
    "heads": 2,
    "max_epochs": 25,
    "patience": 4,
    "lr": 5e-3,
    "batch_size": 64,
    "max_seconds": 40.0,
}


@pytest.fixture(scope="module")
def world():
    w = planted_sequences(n_users=300, n_items=120, seed=2)
    return w, build_interactions(w["orders"], w["order_items"], None, w["products"])


@pytest.fixture(scope="module")
def evaluated(world):
    _, inter = world
    return evaluate_sequence_models(
        inter,
        models=("popularity", "recent_popularity", "item_knn", "repeat", "sasrec"),
        params={"sasrec": SMALL},
        exclude_seen=True,
        log=lambda *_: None,
    )


def test_sasrec_learns_the_planted_order_that_popularity_and_knn_cannot(evaluated):
    res = evaluated
    ndcg = {m: v["ndcg@10"] for m, v in res.metrics.items()}
    assert res.users["returning"] >= 200
    decisions, comparisons = gate_segments(res)
    returning = next(d for d in decisions if d.scope == "returning")
    # the gate serves SASRec: significantly better than the best baseline (item-kNN sees co-occurrence but
    # not which neighbour comes NEXT)
    assert returning.served == "sasrec", (returning.reason, ndcg)
    assert ndcg["sasrec"] > 1.5 * ndcg["popularity"], ndcg
    comp = next(c for s, m, b, c in comparisons if s == "returning" and m == "sasrec")
    assert comp.ci_low > 0 and comp.n_units == res.users["returning"]
    sas = res.fitted["sasrec"]
    # epochs were chosen on the validation window carved from training time, not on the test window
    assert sas.validation["cutoff"] < str(res.cutoff) and 1 <= sas.chosen_epochs <= SMALL["max_epochs"]
    assert len(sas.validation_curve) >= sas.chosen_epochs


def test_training_stops_at_the_time_cap(world):
    _, inter = world
    data = build_data(inter, "product_id")
    from ecom_pipeline.ml.recsys.sequence import SequenceRecommender

    m = SequenceRecommender(**{**SMALL, "max_seconds": 0.0}).fit(data, epochs=5)
    assert m.stopped_early.startswith("time cap") and m.loss_history == []
    assert np.isfinite(m.score(np.arange(3))).all()  # an untrained model still scores (the gate judges it)


def test_refit_skipped_on_request_when_the_time_cap_ended_validation_at_its_best_epoch(world, monkeypatch):
    import itertools
    from types import SimpleNamespace

    from ecom_pipeline.ml.recsys import sequence as seq

    _, inter = world
    data = build_data(inter, "product_id")
    trained_on, real_train = [], seq.SequenceRecommender._train

    def counting(self, d, *args, **kwargs):
        trained_on.append(d is data)  # False: the validation run's data (before its cutoff)
        return real_train(self, d, *args, **kwargs)

    monkeypatch.setattr(seq.SequenceRecommender, "_train", counting)
    clock = itertools.count()  # a stand-in clock: every reading is one "second" later
    monkeypatch.setattr(seq, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    default = seq.SequenceRecommender(**{**SMALL, "max_seconds": 3.0}).fit(data)
    # the cap ended the validation run in its first epoch, its best: by default the refit runs anyway
    assert len(default.validation["curve"]) == 1 and trained_on == [False, True]
    assert default.refit == "on all data, 1 epoch(s)"
    trained_on.clear()  # on request: no second, capped run on all data
    capped = seq.SequenceRecommender(**{**SMALL, "max_seconds": 3.0, "refit_when_capped": False}).fit(data)
    assert capped.stopped_early.startswith("time cap") and len(capped.validation["curve"]) == 1
    assert trained_on == [False] and capped.refit.startswith("skipped")
    assert capped.data is data and len(capped.sequences) == data.n_users
    assert np.isfinite(capped.score(np.arange(data.n_users))).all()
    trained_on.clear()  # with time to spare, the chosen epochs are refit on all data
    spare = seq.SequenceRecommender(
        **{**SMALL, "max_epochs": 2, "max_seconds": 1e9, "refit_when_capped": False}
    ).fit(data)
    assert trained_on == [False, True]
    assert spare.refit == f"on all data, {spare.chosen_epochs} epoch(s)"


def test_repeat_ranks_the_customers_own_purchases_most_bought_first():
    t = pd.Timestamp("2024-01-01")
    rows = [
        ("a", "x", t),
        ("a", "x", t + pd.Timedelta(days=2)),
        ("a", "y", t + pd.Timedelta(days=3)),
        ("b", "z", t),
        ("c", "z", t),
        ("c", "w", t + pd.Timedelta(days=1)),
    ]
    inter = pd.DataFrame(rows, columns=["customer_id", "product_id", "ts"]).assign(
        event_type="purchase", weight=5.0
    )
    data = build_data(inter, "product_id")
    model = RepeatPurchases().fit(data)
    s = model.score(np.array([0]))[0]
    order = [data.items[j] for j in np.argsort(-s, kind="stable")]
    assert order[:2] == ["x", "y"] and order[2] == "z"  # own purchases by count, then the popular item
    assert model.explain(data, 0, data.items.get_loc("x")).startswith("you bought")


def test_baskets_group_lines_of_one_order():
    t = pd.Timestamp("2024-01-01")
    rows = [("a", "p2", t), ("a", "p1", t), ("a", "p3", t + pd.Timedelta(days=1))]
    inter = pd.DataFrame(rows, columns=["customer_id", "product_id", "ts"]).assign(
        event_type="purchase", weight=5.0
    )
    data = build_data(inter, "product_id")
    seqs, ends = user_baskets(data)
    assert len(seqs[0]) == 3 and list(ends[0]) == [1, 2]


def test_registered_network_round_trips_through_the_safe_format(evaluated, tmp_path):
    import torch

    from ecom_pipeline.ml.safe_artifacts import WEIGHTS_FILE, load_model_dir, save_model

    net = evaluated.fitted["sasrec"].net.cpu().eval()
    spec = save_model(net, "pytorch", tmp_path)
    assert spec["format"] == "torch_state_dict" and (tmp_path / WEIGHTS_FILE).is_file()
    back = load_model_dir(tmp_path)
    assert isinstance(back, SASRecNet)
    history = net.item_ids[:5]
    assert back.recommend(history, 10) == net.recommend(history, 10)
    for name, tensor in net.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_product_embeddings_are_used_as_item_features(world):
    w, inter = world
    data = build_data(inter, "product_id")
    rng = np.random.default_rng(0)
    emb = pd.DataFrame(
        {
            "product_id": w["products"]["product_id"],
            "embedding": list(rng.normal(size=(len(w["products"]), 8)).astype(np.float32)),
        }
    )
    from ecom_pipeline.ml.recsys.sequence import SequenceRecommender

    m = SequenceRecommender(**{**SMALL, "max_seconds": 5.0}).fit(data, epochs=1, product_embeddings=emb)
    assert m.inputs_used["product_embeddings"] == f"{data.n_items}/{data.n_items} items"
    assert m.net.feature_proj is not None and m.net.features.abs().sum() > 0


def test_sequence_asset_gates_per_segment_and_serves_the_winner(tmp_path):
    from ecom_pipeline.assets import recommender, sequence_recommender
    from ecom_pipeline.ml.serving_gate import serving_violations

    w = planted_sequences(n_users=200, n_items=80, seed=3)  # smaller: the asset trains three times
    db = tmp_path / "wh.duckdb"
    write_staging(db, {k: v for k, v in w.items() if k != "successor"})
    res = {
        "warehouse": WarehouseResource(path=str(db)),
        "io_manager": WarehouseIOManager(database=str(db)),
        "mlflow": MLflowResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
        "source": SourceResource(kind="synthetic", data_root=str(tmp_path)),
        "paths": PathsResource(data_root=str(tmp_path)),
        "compute": ComputeResource(),
    }
    cfg = {
        "models": ["popularity", "recent_popularity", "item_knn", "repeat", "sasrec"],
        "exclude_seen": True,
        **{k: v for k, v in SMALL.items() if k != "batch_size"},
        "batch_size_cpu": SMALL["batch_size"],
        "max_epochs": 12,
        "max_seconds": 20.0,
    }
    result = dg.materialize(
        [recommender.interactions, sequence_recommender.sequence_recommender],
        resources=res,
        run_config={"ops": {"models__sequence_recommender": {"config": cfg}}},
    )
    assert result.success
    con = duckdb.connect(
        str(db)
    )  # serving_violations ensures ml.serving_decisions exists: a write connection
    try:
        decisions = con.execute(
            "SELECT * FROM ml.serving_decisions WHERE task = 'recommendation_sequence'"
        ).fetchdf()
        serving = con.execute("SELECT * FROM serving.sequence_recommendations").fetchdf()
        metrics = con.execute(
            "SELECT * FROM ml.model_metrics WHERE task = 'recommendation_sequence'"
        ).fetchdf()
        violations = serving_violations(con)
    finally:
        con.close()
    assert set(decisions.scope) == {"returning", "new"}
    returning = decisions.set_index("scope").loc["returning"]
    assert returning.candidate == "sasrec" and returning.served == "sasrec", returning.reason
    assert set(serving[serving.segment == "returning"].model) == {"sasrec"}
    assert serving.groupby("customer_id").size().max() == 10
    assert violations.empty, violations
    with_ci = metrics.dropna(subset=["ci_low"])
    assert {"sasrec", "repeat"} <= set(with_ci.model) and (with_ci.n_units > 0).all()
    md = result.asset_materializations_for_node("models__sequence_recommender")[0].metadata
    assert md["registered"].value.startswith("ecom.recsys.sasrec_item v")
