"""Do region-graph features earn their place in the delivery models?  On the Olist sample's delivered orders
(ingested by the real ``ingest`` job into a temporary warehouse, customers and sellers placed as the assets
place them) with the project's time split, the delivery-days regressor and the late classifier are fitted
without graph features and with each family of :mod:`ecom_pipeline.ml.spatial.delivery_graph` (coordinates
only, neighbour aggregates, GCN), every one against the no-graph model with a paired-bootstrap interval over
the test orders; the serving gate's nested choice (baseline -> no graph -> the asset's default graph variant)
as the asset makes it.  A line for the multi-country sample shows what happens on a shop without the data.

Writes benchmarks/results/delivery_graph.{json,md}.  Measures only.  On the shared 2-core machine run as
``OMP_NUM_THREADS=1 nice python benchmarks/delivery_graph.py`` (OpenMP threads fighting for the cores make the
gradient-boosting fits several times slower).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
RESULTS = Path(__file__).parent / "results"
VARIANTS = ["latlon", "neighbour", "gcn", "neighbour+gcn"]  # each vs the no-graph model
RECENT_DAYS = 90


def located(kind: str, root: Path) -> tuple[dict, tuple]:
    """Ingest ``kind`` (olist, or a mapped example under docs/examples) and place customers/sellers."""
    import dagster as dg

    os.environ.update({"ECOM_DATA_ROOT": str(root)})
    for var in ("ECOM_WAREHOUSE", "MLFLOW_TRACKING_URI", "ECOM_DATA_DIR", "ECOM_MAPPING", "ECOM_COUNTRY"):
        os.environ.pop(var, None)
    if kind == "olist":
        os.environ.update(ECOM_DATA_SOURCE="olist", ECOM_DATA_DIR=str(DATASETS / "olist"))
    else:
        os.environ.update(
            ECOM_DATA_SOURCE="mapped",
            ECOM_DATA_DIR=str(DATASETS / kind),
            ECOM_MAPPING=str(REPO / "docs" / "examples" / f"{kind}.yaml"),
        )
    from ecom_pipeline.assets.spatial import located_frames
    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions, build_resources

    settings = Settings.from_env()
    assert (
        build_definitions(settings)
        .resolve_job_def("ingest")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral())
        .success
    )
    res = build_resources(settings)
    f, countries, _ = located_frames(res["warehouse"], res["source"])
    return f, countries


def olist(test_fraction: float) -> dict:
    from sklearn.metrics import roc_auc_score

    from ecom_pipeline.ml.evaluation import auc_comparison, paired_bootstrap
    from ecom_pipeline.ml.serving_gate import decide_chain
    from ecom_pipeline.ml.spatial.delivery import (
        DAYS_CANDIDATE,
        FEATURES,
        GRAPH_DAYS_CANDIDATE,
        _fit_models,
        baseline_days,
        baseline_late_scores,
        delivery_frame,
    )
    from ecom_pipeline.ml.spatial.delivery_graph import DEFAULT_VARIANT, graph_features, parse_variant
    from ecom_pipeline.ml.splits import temporal_split

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        f, _ = located("olist", Path(root))
    frame = delivery_frame(f["orders"], f["order_items"], f["customers"], f["sellers"])
    split = temporal_split(frame, "purchased_at", test_fraction=test_fraction)
    tr, te = split.train, split.test
    t1 = time.perf_counter()
    g = graph_features(frame, split.cutoff, "latlon+" + DEFAULT_VARIANT)
    feature_s = time.perf_counter() - t1
    gf = frame.join(g.frame[g.columns])
    family = {
        "latlon": [c for c in g.columns if c.endswith(("_lat", "_lng"))],
        "gcn": [c for c in g.columns if c.startswith("gcn_")],
    }
    family["neighbour"] = [c for c in g.columns if c not in family["latlon"] + family["gcn"]]
    y, late = te["delivery_days"].to_numpy(dtype=float), te["is_late"].to_numpy(dtype=float)
    fits = {"none": _fit_models(tr, te, FEATURES, 0)}
    for v in VARIANTS:
        cols = FEATURES + [c for fam in parse_variant(v) for c in family[fam]]
        fits[v] = _fit_models(gf.loc[tr.index], gf.loc[te.index], cols, 0)
    # tried: the neighbour aggregates from the last RECENT_DAYS of deliveries only (to follow the drift)
    recent = graph_features(frame, split.cutoff, "neighbour", window_days=RECENT_DAYS)
    rf = frame.join(recent.frame[recent.columns])
    fits[f"neighbour, last {RECENT_DAYS} days"] = _fit_models(
        rf.loc[tr.index], rf.loc[te.index], FEATURES + recent.columns, 0
    )
    family[f"neighbour, last {RECENT_DAYS} days"] = recent.columns
    rows = []
    for v, (_, pred, _, score) in fits.items():
        n_graph = (
            0
            if v == "none"
            else len(family[v])
            if v in family
            else sum(len(family[x]) for x in parse_variant(v))
        )
        row = {
            "variant": v,
            "n_features": len(FEATURES) + n_graph,
            "mae": float(np.mean(np.abs(y - pred))),
            "auc": float(roc_auc_score(late, score)) if score is not None else None,
        }
        if v != "none":
            c = paired_bootstrap(
                np.abs(y - pred), np.abs(y - fits["none"][1]), metric="mae", higher_is_better=False
            )
            row |= {
                "mae_diff": c.diff,
                "mae_ci": [c.ci_low, c.ci_high],
                "mae_change_pct": 100 * c.diff / c.baseline_value,
                "mae_significant": c.significant,
            }
            if score is not None and fits["none"][3] is not None:
                a = auc_comparison(late, score, fits["none"][3])
                row |= {"auc_diff": a.diff, "auc_ci": [a.ci_low, a.ci_high], "auc_significant": a.significant}
        rows.append(row)
    # the gate as the asset runs it (default variant): baseline -> no-graph model -> graph model
    base = baseline_days(tr, te)
    best = min(base, key=lambda k: np.mean(np.abs(y - base[k])))
    days = {best: base[best], DAYS_CANDIDATE: fits["none"][1], GRAPH_DAYS_CANDIDATE: fits[DEFAULT_VARIANT][1]}
    steps = decide_chain(
        "delivery_delay",
        "all",
        best,
        [DAYS_CANDIDATE, GRAPH_DAYS_CANDIDATE],
        lambda c, r: paired_bootstrap(
            np.abs(y - days[c]), np.abs(y - days[r]), metric="mae", higher_is_better=False
        ),
    )
    late_base = baseline_late_scores(tr, te)
    return {
        "dataset": "olist",
        "orders_delivered": len(frame),
        "cutoff": str(split.cutoff),
        "n_train": len(tr),
        "n_test": len(te),
        "test_late_share": float(late.mean()),
        "train_late_share": float(tr["is_late"].mean()),
        "graph_details": g.details,
        "graph_reason": g.reason,
        "families": {k: len(v) for k, v in family.items()},
        "baselines_mae": {k: float(np.mean(np.abs(y - v))) for k, v in base.items()},
        "baselines_auc": {k: float(roc_auc_score(late, v)) for k, v in late_base.items()},
        "variants": rows,
        "gate": [
            {"candidate": d.candidate, "reference": d.baseline, "served": d.served, "reason": d.reason}
            for d in steps
        ],
        "graph_feature_s": feature_s,
        "total_s": time.perf_counter() - t0,
    }


def other_shop(kind: str) -> dict:
    from ecom_pipeline.ml.spatial.delivery import delivery_frame
    from ecom_pipeline.ml.spatial.geo import LEVELS, region_id

    with tempfile.TemporaryDirectory() as root:
        f, countries = located(kind, Path(root))
    frame = delivery_frame(f["orders"], f["order_items"], f["customers"], f["sellers"])
    regions = {lv: int(region_id(f["customers"], lv, qualify=len(countries) > 1).nunique()) for lv in LEVELS}
    out = {
        "dataset": kind,
        "orders": len(f["orders"]),
        "orders_delivered_with_dates": len(frame),
        "customer_regions": regions,
        "countries": list(countries),
    }
    if len(frame) < 50:
        out["result"] = (
            f"no delivery model: {len(frame)} delivered orders with a delivery and an estimated date "
            "(the export has no delivery dates), so no graph features either"
        )
    return out


def machine() -> dict:
    import torch

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    return {
        "commit": commit,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "load_average_at_start": os.getloadavg(),
    }


def _ci(ci) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def markdown(res: dict) -> str:
    m, o = res["machine"], res["olist"]
    lines = [
        "# Delivery models with and without region-graph features",
        "",
        (
            f"{res['date']} at commit {m['commit']} on {m['platform']}, {m['cpus']} CPUs (shared with other "
            f"engineers), OMP_NUM_THREADS={m['omp_num_threads']}, load average at start "
            f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])}."
        ),
        "",
        (
            f"## Olist sample: {o['orders_delivered']} delivered orders, time split at {o['cutoff']}: "
            f"{o['n_train']} training, **{o['n_test']} test orders**"
        ),
        "",
        (
            f"Graph features from orders known before each order's snapshot (training order: start of its "
            f"purchase month; test order: the cutoff, {o['graph_details']['known_orders_at_cutoff']} known "
            f"orders); levels {o['graph_details']['graph_levels']} "
            f"({o['graph_details']['zip3_regions_with_known_orders']} zip3 and "
            f"{o['graph_details']['state_regions_with_known_orders']} state regions with known deliveries), "
            f"GCN over {o['graph_details'].get('gcn_zip3_nodes')} zip3 nodes / "
            f"{o['graph_details'].get('gcn_zip3_edges')} edges; features built in {o['graph_feature_s']:.1f} "
            f"s. Late share: training {o['train_late_share']:.3f}, test {o['test_late_share']:.3f}."
        ),
        "",
        "Baselines (training orders only): MAE "
        + ", ".join(f"{k} {v:.3f}" for k, v in o["baselines_mae"].items())
        + "; late AUC "
        + ", ".join(f"{k} {v:.3f}" for k, v in o["baselines_auc"].items())
        + ".",
        "",
        "| features | n | MAE (days) | vs no graph [95 % CI] | change | significant | late AUC "
        "| vs no graph [95 % CI] |",
        "|---|---:|---:|---|---:|---|---:|---|",
    ]
    for r in o["variants"]:
        if r["variant"] == "none":
            lines.append(
                f"| none (the no-graph model) | {r['n_features']} | {r['mae']:.3f} | | | | {r['auc']:.3f} | |"
            )
            continue
        lines.append(
            f"| {r['variant']} | {r['n_features']} | {r['mae']:.3f} | {r['mae_diff']:+.3f} "
            f"{_ci(r['mae_ci'])} | {r['mae_change_pct']:+.1f} % | {'yes' if r['mae_significant'] else 'no'} "
            f"| {r['auc']:.3f} | {r['auc_diff']:+.3f} {_ci(r['auc_ci'])} |"
        )
    lines += ["", "Serving gate (delivery days, the asset's default variant `neighbour+gcn`):", ""]
    lines += [f"- {g['candidate']} vs {g['reference']}: {g['reason']}" for g in o["gate"]]
    lines += ["", "Target (issue 18): MAE with graph features at least 5 % lower than without, significant."]
    for s in res["other_shops"]:
        lines += [
            "",
            f"## {s['dataset']}: {s['orders']} orders, customer regions {s['customer_regions']}",
            "",
            s.get("result", f"{s['orders_delivered_with_dates']} delivered orders with dates"),
        ]
    lines += ["", "## The other graph model: ST-GCN (forecasting, cited, not re-run)", "", stgcn_note()]
    lines += ["", f"Total {res['total_s']:.0f} s."]
    return "\n".join(lines) + "\n"


def stgcn_note() -> str:
    """The ST-GCN against its no-graph twin, from benchmarks/results/forecasting.json (another benchmark)."""
    path = RESULTS / "forecasting.json"
    if not path.exists():
        return "benchmarks/results/forecasting.json not found: run benchmarks/forecasting.py."
    f = json.loads(path.read_text())
    parts = []
    for d in f["datasets"]:
        m = d["mean_over_states"]
        if "stgcn" in m and "stgcn_no_graph" in m:
            parts.append(
                f"{d['dataset']} ({len(d['states'])} states, rolling-origin folds): MASE ST-GCN "
                f"{m['stgcn']['mase']:.3f} vs no-graph twin {m['stgcn_no_graph']['mase']:.3f}; ST-GCN beats "
                f"the twin on {d['stgcn_beats_no_graph_states']}/{len(d['states'])} states"
            )
    return (
        ("; ".join(parts) + f" (benchmarks/results/forecasting.md, commit {f['machine'].get('commit')}).")
        if parts
        else "no ST-GCN figures."
    )


def main() -> None:
    t0 = time.perf_counter()
    res = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "olist": olist(0.2),
        "other_shops": [other_shop("sales_sample_multicountry")],
    }
    res["total_s"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "delivery_graph.json").write_text(json.dumps(res, indent=1, default=str))
    (RESULTS / "delivery_graph.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
