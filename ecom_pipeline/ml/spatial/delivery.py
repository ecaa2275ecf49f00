"""Delivery-delay model: predict delivery days (and lateness) of an order from the promised delivery days,
distance, regions, the seller's past deliveries and the calendar.  Baselines (all fitted on the training part
only): the platform's promised date and the per-state median delivery days (days); the promised days as a
lateness score and the per-state late rate (lateness).  Each model is compared with its best baseline with a
paired-bootstrap interval over the test orders; the serving gate picks what serves.

Time-based split (:func:`ecom_pipeline.ml.splits.temporal_split` on the purchase time); seller history uses
only orders delivered before each order was placed (no leakage)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ecom_pipeline.ml.spatial.delivery_graph import DEFAULT_VARIANT, GraphFeatures, graph_features
from ecom_pipeline.ml.spatial.geo import delivered_orders, order_geo
from ecom_pipeline.ml.splits import temporal_split

LOCATION_COLUMNS = [
    f"{side}_{c}" for side in ("c", "s") for c in ("state", "zip3", "country", "level", "lat", "lng")
]
FEATURES = [
    "distance_km",
    "same_state",
    "c_state_code",
    "s_state_code",
    "month",
    "weekday",
    "n_items",
    "price",
    "freight",
    "promised_days",
    "seller_past_mean_days",
    "seller_past_late_rate",
    "seller_past_orders",
]


def delivery_frame(orders, items, customers, sellers) -> pd.DataFrame:
    o = delivered_orders(orders)
    o = o[o["delivered_at"].notna() & o["estimated_delivery_at"].notna() & (o["delivery_days"] >= 0)]
    if o.empty or items.empty:
        return pd.DataFrame(columns=["order_id", "purchased_at", "delivery_days", "is_late"] + FEATURES)
    g = order_geo(o, items, customers, sellers)
    # the location columns the graph features place an order with (ml/spatial/delivery_graph.py)
    where = {c: (c, "first") for c in LOCATION_COLUMNS if c in g.columns}
    agg = (
        g.groupby("order_id")
        .agg(
            distance_km=("distance_km", "max"),
            n_items=("seller_id", "size"),
            price=("price", "sum"),
            freight=("freight", "sum"),
            seller_id=("seller_id", "first"),
            **where,
        )
        .reset_index()
    )
    agg = agg.reindex(columns=list(agg.columns) + [c for c in LOCATION_COLUMNS if c not in agg.columns])
    f = o[["order_id", "purchased_at", "delivered_at", "delivery_days", "promised_days", "is_late"]].merge(
        agg, on="order_id"
    )
    f["same_state"] = (f["c_state"] == f["s_state"]).astype(float)
    states = sorted(set(f["c_state"].dropna()) | set(f["s_state"].dropna()))
    code = {s: i for i, s in enumerate(states)}
    f["c_state_code"] = f["c_state"].map(code).astype(float)
    f["s_state_code"] = f["s_state"].map(code).astype(float)
    f["month"] = f["purchased_at"].dt.month
    f["weekday"] = f["purchased_at"].dt.weekday
    # seller history known at purchase time: deliveries completed before this purchase
    f = f.sort_values("purchased_at").reset_index(drop=True)
    f["seller_past_mean_days"], f["seller_past_late_rate"], f["seller_past_orders"] = seller_history(f)
    f["is_late"] = f["is_late"].astype(float)
    return f


def seller_history(f: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per order of ``f``: the mean delivery days, the late share and the number of its seller's deliveries
    completed strictly before the order was placed (NaN, NaN, 0 without any).

    Running sums per seller in delivery order, looked up with an as-of join on the purchase time: linear
    in the orders.  A per-order slice of the seller's history was quadratic per seller: 162 s at 1M orders,
    14 s this way."""
    n = np.zeros(len(f), dtype=np.int64)
    mean_days = np.full(len(f), np.nan)
    late_rate = np.full(len(f), np.nan)
    has_seller = (f["seller_id"].notna() & f["purchased_at"].notna()).to_numpy()
    if not has_seller.any():
        return mean_days, late_rate, n
    hist = f.loc[has_seller, ["seller_id", "delivered_at", "delivery_days", "is_late"]]
    hist = hist.sort_values(["seller_id", "delivered_at"], kind="stable")
    by_seller = hist.assign(is_late=hist["is_late"].astype(float)).groupby("seller_id", sort=False)
    hist = pd.DataFrame(
        {
            "seller_id": hist["seller_id"],
            "delivered_at": hist["delivered_at"],
            "past_n": by_seller.cumcount().to_numpy() + 1,
            "days_sum": by_seller["delivery_days"].cumsum().to_numpy(dtype=float),
            "late_sum": by_seller["is_late"].cumsum().to_numpy(dtype=float),
        }
    )
    # the running totals after the seller's last delivery at each instant; then sorted for the as-of join
    hist = hist.drop_duplicates(["seller_id", "delivered_at"], keep="last").sort_values("delivered_at")
    orders = pd.DataFrame(
        {"seller_id": f.loc[has_seller, "seller_id"], "at": f.loc[has_seller, "purchased_at"]}
    ).astype({"at": hist["delivered_at"].dtype})
    orders["row"] = np.flatnonzero(has_seller)
    past = pd.merge_asof(
        orders.sort_values("at", kind="stable"),
        hist,
        left_on="at",
        right_on="delivered_at",
        by="seller_id",
        allow_exact_matches=False,  # completed strictly before the purchase
    )
    known = past["past_n"].notna().to_numpy()
    rows = past["row"].to_numpy()[known]
    k = past["past_n"].to_numpy()[known]
    n[rows] = k.astype(np.int64)
    mean_days[rows] = past["days_sum"].to_numpy()[known] / k
    late_rate[rows] = past["late_sum"].to_numpy()[known] / k
    return mean_days, late_rate, n


@dataclass
class DeliveryResult:
    metrics: dict  # model and baseline values
    predictions: pd.DataFrame  # test orders: what each served model predicts, and which model it is
    regressor: object
    classifier: object | None
    cutoff: pd.Timestamp
    n_train: int
    n_test: int
    comparisons: dict = None  # "delivery_delay" / "delivery_late" -> (candidate, baseline, Comparison)
    decisions: list = None  # serving-gate decisions, tasks delivery_delay and delivery_late
    graph: GraphFeatures | None = None  # the graph features used (or why there are none)
    graph_comparisons: list = field(default_factory=list)  # (task, candidate, reference, Comparison)
    graph_regressor: object | None = None
    graph_classifier: object | None = None

    def comparison_rows(self) -> list[tuple[str, str, str, object]]:
        """Every (task, candidate, baseline, Comparison): models without graph features vs their best
        baseline, then the graph-feature models vs the baseline and vs their no-graph twins."""
        return [
            (task, c, b, cmp) for task, (c, b, cmp) in (self.comparisons or {}).items()
        ] + self.graph_comparisons


DAYS_CANDIDATE, LATE_CANDIDATE = "hgb_delivery_days", "hgb_late_classifier"
GRAPH_DAYS_CANDIDATE, GRAPH_LATE_CANDIDATE = "hgb_delivery_days_graph", "hgb_late_classifier_graph"


def baseline_days(tr: pd.DataFrame, te: pd.DataFrame) -> dict[str, np.ndarray]:
    """Delivery-days baselines for the test orders, fitted on the training orders only."""
    state_median = tr.groupby("c_state")["delivery_days"].median()
    overall = float(tr["delivery_days"].median())
    return {
        "platform_estimate": te["promised_days"].to_numpy(dtype=float),
        "state_median": te["c_state"].map(state_median).fillna(overall).to_numpy(dtype=float),
    }


def baseline_late_scores(tr: pd.DataFrame, te: pd.DataFrame) -> dict[str, np.ndarray]:
    """Lateness scores for the test orders from the training orders only: the promised days (with the sign
    that ranks the training orders better) and the per-state late rate."""
    from sklearn.metrics import roc_auc_score

    out = {}
    if tr["is_late"].nunique() == 2:
        sign = 1.0 if roc_auc_score(tr["is_late"], tr["promised_days"]) >= 0.5 else -1.0
        out["promised_days_score"] = sign * te["promised_days"].to_numpy(dtype=float)
    rate = tr.groupby("c_state")["is_late"].mean()
    out["state_late_rate"] = te["c_state"].map(rate).fillna(float(tr["is_late"].mean())).to_numpy(dtype=float)
    return out


def _fit_models(tr: pd.DataFrame, te: pd.DataFrame, features: list[str], seed: int):
    """(regressor, predicted test days, classifier or None, test late scores or None) on ``features``."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    reg = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=seed)
    reg.fit(tr[features], tr["delivery_days"])
    clf, late_score = None, None
    if tr["is_late"].nunique() == 2:
        clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed)
        clf.fit(tr[features], tr["is_late"].astype(int))
        late_score = clf.predict_proba(te[features])[:, 1]
    return reg, reg.predict(te[features]), clf, late_score


def train_delivery_model(
    frame: pd.DataFrame,
    test_fraction: float = 0.2,
    seed: int = 0,
    graph_variant: str | None = DEFAULT_VARIANT,
) -> DeliveryResult:
    """The delivery-days regressor and late classifier without graph features, and (``graph_variant``, see
    :mod:`delivery_graph`; None: none) their twins with graph features built from training-period orders; the
    serving gate picks per task among the best baseline, the no-graph model and the graph model, each richer
    model serving only if it significantly beats what would serve without it."""
    from sklearn.metrics import mean_absolute_error, roc_auc_score

    from ecom_pipeline.ml.evaluation import auc_comparison, paired_bootstrap
    from ecom_pipeline.ml.serving_gate import decide_chain

    split = temporal_split(frame, "purchased_at", test_fraction=test_fraction)
    tr, te = split.train, split.test
    reg, pred, clf, late_score = _fit_models(tr, te, FEATURES, seed)
    graph = graph_features(frame, split.cutoff, graph_variant, seed=seed) if graph_variant else None
    g_reg = g_clf = g_pred = g_late = None
    if graph is not None and graph.columns:
        gcols = FEATURES + graph.columns
        gf = frame.join(graph.frame[graph.columns])
        g_reg, g_pred, g_clf, g_late = _fit_models(gf.loc[tr.index], gf.loc[te.index], gcols, seed)

    y = te["delivery_days"].to_numpy(dtype=float)
    base_days = baseline_days(tr, te)
    m = {
        "mae": float(mean_absolute_error(y, pred)),
        "baseline_mae": float(mean_absolute_error(y, base_days["platform_estimate"])),
    }
    m |= {f"{name}_mae": float(np.mean(np.abs(y - v))) for name, v in base_days.items()}
    best_days = min(base_days, key=lambda k: m[f"{k}_mae"])
    days_by_model = {best_days: base_days[best_days], DAYS_CANDIDATE: pred}
    if g_pred is not None:
        days_by_model[GRAPH_DAYS_CANDIDATE] = g_pred
        m["graph_mae"] = float(mean_absolute_error(y, g_pred))

    def days_comparison(candidate, reference):
        return paired_bootstrap(
            np.abs(y - days_by_model[candidate]),
            np.abs(y - days_by_model[reference]),
            metric="mae",
            higher_is_better=False,
        )

    comparisons = {"delivery_delay": (DAYS_CANDIDATE, best_days, days_comparison(DAYS_CANDIDATE, best_days))}
    graph_comparisons = []
    if g_pred is not None:
        graph_comparisons += [
            ("delivery_delay", GRAPH_DAYS_CANDIDATE, ref, days_comparison(GRAPH_DAYS_CANDIDATE, ref))
            for ref in (DAYS_CANDIDATE, best_days)
        ]
    days_decisions = decide_chain(
        "delivery_delay", "all", best_days, list(days_by_model)[1:], days_comparison
    )
    days_served = days_decisions[-1].served
    decisions = list(days_decisions)
    late_served, late_model = np.full(len(te), np.nan), None
    if te["is_late"].nunique() == 2:
        base_late = baseline_late_scores(tr, te)
        m |= {f"{name}_auc": float(roc_auc_score(te["is_late"], v)) for name, v in base_late.items()}
        # the regressor's predicted slack (predicted days beyond the promise) as a lateness score
        m["regressor_slack_auc"] = float(roc_auc_score(te["is_late"], pred - te["promised_days"]))
        best_late = max(base_late, key=lambda k: m[f"{k}_auc"])
        m["baseline_auc"] = m[f"{best_late}_auc"]
        late_by_model = {best_late: base_late[best_late]}
        if late_score is not None:
            m["auc"] = float(roc_auc_score(te["is_late"], late_score))
            late_by_model[LATE_CANDIDATE] = late_score
        if g_late is not None:
            m["graph_auc"] = float(roc_auc_score(te["is_late"], g_late))
            late_by_model[GRAPH_LATE_CANDIDATE] = g_late

        def late_comparison(candidate, reference):
            return auc_comparison(te["is_late"], late_by_model[candidate], late_by_model[reference])

        if late_score is not None:
            comparisons["delivery_late"] = (
                LATE_CANDIDATE,
                best_late,
                late_comparison(LATE_CANDIDATE, best_late),
            )
        if g_late is not None:
            graph_comparisons += [
                ("delivery_late", GRAPH_LATE_CANDIDATE, ref, late_comparison(GRAPH_LATE_CANDIDATE, ref))
                for ref in (LATE_CANDIDATE, best_late)
            ]
        candidates = list(late_by_model)[1:]
        late_decisions = (
            decide_chain("delivery_late", "all", best_late, candidates, late_comparison)
            if candidates
            else decide_chain("delivery_late", "all", best_late, [LATE_CANDIDATE], lambda c, r: None)
        )
        decisions += late_decisions
        late_model = late_decisions[-1].served
        # probabilities only: the per-state late rate is one; the promised-days rule is a ranking (its input,
        # promised_days, is in the table and late_model names the rule)
        late_served = {
            LATE_CANDIDATE: late_score,
            GRAPH_LATE_CANDIDATE: g_late,
            "state_late_rate": base_late["state_late_rate"],
        }.get(late_model)
        if late_served is None:
            late_served = np.full(len(te), np.nan)
    served_days = days_by_model[days_served]
    preds = te[["order_id", "purchased_at", "delivery_days", "promised_days", "is_late"]].assign(
        predicted_days=served_days,
        late_probability=late_served,
        days_model=days_served,
        late_model=late_model,
    )
    return DeliveryResult(
        m,
        preds,
        reg,
        clf,
        split.cutoff,
        len(tr),
        len(te),
        comparisons,
        decisions,
        graph,
        graph_comparisons,
        g_reg,
        g_clf,
    )
