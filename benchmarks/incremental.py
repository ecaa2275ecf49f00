"""Incremental features and scoring after one new day vs the same steps in full, on one warehouse.

Per case (``--orders N``): the synthetic shop is dumped to CSV and split into two partitions, the history and
the last day (as ``load.py --ingest-daily`` does), and staged through the partitioned ingest
(``load_raw_partition`` + ``upsert_staging_partition``).  Then, on the warehouse holding the history:

1. every step in full once (the state a daily run starts from);
2. the last day's partition is staged (timed: the ingest layer of the daily run);
3. **daily**: the steps in ``auto`` mode, i.e. incremental (timed per step);
4. **full**: the same steps with ``mode=full`` on the same staging (timed per step), and the tables compared:
   ``features.interactions`` and ``serving.user_profiles`` (segment columns left out) must have equal
   fingerprints; the segments, assigned daily with the stored centroids, are reported as the share of
   customers a refit puts in the same segment;
   for ``serving.recommendations`` the rows of recomputed customers must equal the full run's, and the kept
   lists of other customers that a full refit would change are counted (the documented difference).

The steps are the framework-free functions the assets call (``features/interactions``,
``features/category_interactions``, ``serving/user_profiles``, ``serving/recommendations``), without Dagster
and MLflow around them; the item level is served by ``--item-model`` (default ALS, the usual winner), the
category level by popularity (global counts; rescored daily for the customers with new activity, like the
item level, and the kept lists a full refresh would change are counted per level).  The machine is shared:
the load average is recorded beside each figure.

    nice python benchmarks/incremental.py --orders 100000
    nice python benchmarks/incremental.py --orders 1000000      # the 1M measurement (about an hour, ~10 GB)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))


def _stage(con, files: Path, root: Path, part: str, key: bytes) -> float:
    from load import _identity_mapping

    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.cleaning.staging_upsert import upsert_staging_partition
    from ecom_pipeline.loading import load_raw_partition
    from ecom_pipeline.sources.mapped import MappedSource

    src = MappedSource.from_yaml(_identity_mapping(root, part + "/{table}.csv"), data_dir=files)
    t0 = time.perf_counter()
    for t in TABLE_ORDER:
        load_raw_partition(con, src, t, part, load_id=f"{part}-{t}")
        upsert_staging_partition(con, t, part, pseudonym_key=key, hints=src.parse_hints(t))
    return time.perf_counter() - t0


def _steps(con, mode: str, item_model: str) -> tuple[dict, dict]:
    """Run the four steps; (seconds per step, what each did)."""
    from ecom_pipeline.incremental.interactions import (
        refresh_category_interactions,
        refresh_interactions,
    )
    from ecom_pipeline.incremental.profiles import refresh_user_profiles
    from ecom_pipeline.incremental.recommendations import LevelChoice, refresh_recommendations
    from ecom_pipeline.ml.recsys.interactions import DEFAULT_WEIGHTS

    params = {
        "als": {"factors": 32, "iterations": 15, "regularization": 0.05, "alpha": 2.0},
        "item_knn": {"neighbours": 100},
    }
    choices = [
        LevelChoice("item", 10, item_model, "benchmark", "v1", params.get(item_model, {})),
        LevelChoice("category", 5, "popularity", "benchmark", "baseline (no training)", {}),
    ]
    seconds, did = {}, {}
    t0 = time.perf_counter()
    r = refresh_interactions(con, DEFAULT_WEIGHTS, mode=mode)
    seconds["interactions"], did["interactions"] = time.perf_counter() - t0, (r.plan, r.counts)
    t0 = time.perf_counter()
    cat_plan, cat_counts, _ = refresh_category_interactions(con, mode=mode)
    seconds["category_interactions"] = time.perf_counter() - t0
    did["category_interactions"] = (cat_plan, cat_counts)
    t0 = time.perf_counter()
    p = refresh_user_profiles(con, mode=mode)
    seconds["user_profiles"], did["user_profiles"] = time.perf_counter() - t0, (p.plan, p.counts)
    t0 = time.perf_counter()
    rec = refresh_recommendations(con, choices, user_regions=None, item_names={}, mode=mode)
    seconds["recommendations"] = time.perf_counter() - t0
    did["recommendations"] = (rec.plan, rec.counts, rec.scope)
    return seconds, did


def _recs(con):
    return con.execute(
        "SELECT customer_id, level, rank, item_id, score FROM serving.recommendations "
        "ORDER BY customer_id, level, rank"
    ).fetchdf()


SEGMENT_COLUMNS = ("segment", "segment_name", "segment_description")


def _segments(con):
    return (
        con.execute("SELECT customer_id, segment FROM serving.user_profiles")
        .fetchdf()
        .set_index("customer_id")["segment"]
    )


def run_case(orders: int, root: Path, item_model: str) -> dict:
    import duckdb
    from load import _split_by_day

    from ecom_pipeline.canonical import TABLE_ORDER
    from ecom_pipeline.loading import load_raw_table
    from ecom_pipeline.sources.synthetic import SyntheticSource
    from ecom_pipeline.warehouse.tables import table_fingerprint

    key = b"benchmark-key"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    gen = duckdb.connect(str(root / "generated.duckdb"))
    source = SyntheticSource(n_orders=orders, seed=7, image_dir=None)
    for t in TABLE_ORDER:
        load_raw_table(gen, source, t, load_id="gen")
    history, day, rows = _split_by_day(gen, root / "files")
    gen.close()
    (root / "generated.duckdb").unlink()
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    history_ingest_s = _stage(con, root / "files", root, history, key)
    _steps(con, "full", item_model)
    ingest_s = _stage(con, root / "files", root, day, key)
    before = _recs(con)
    daily_s, daily_did = _steps(con, "auto", item_model)
    # the segments are assigned with the stored centroids daily and refit in full: compared separately
    compared = ("features.interactions", "features.category_interactions", "serving.user_profiles")
    daily = {t: table_fingerprint(con, t, SEGMENT_COLUMNS) for t in compared}
    segments = {"daily": _segments(con)}
    daily_recs = _recs(con)
    full_s, _ = _steps(con, "full", item_model)
    full = {t: table_fingerprint(con, t, SEGMENT_COLUMNS) for t in daily}
    segments["full"] = _segments(con)
    full_recs = _recs(con)
    con.close()
    recomputed = set(daily_did["recommendations"][0].customers)
    item = {n: f[(f["level"] == "item")] for n, f in (("daily", daily_recs), ("full", full_recs))}
    fresh = {
        n: f[f["customer_id"].isin(recomputed)].reset_index(drop=True)[["customer_id", "rank", "item_id"]]
        for n, f in item.items()
    }
    kept = {n: f[~f["customer_id"].isin(recomputed)] for n, f in item.items()}
    stale_users = _changed_kept_lists(daily_recs, full_recs, recomputed, "item")
    # recomputed customers: share of the full refit's top-k items the daily list holds (ALS fold-in vs refit)
    lists = {n: f.groupby("customer_id")["item_id"].apply(set) for n, f in fresh.items()}
    common = lists["full"].index.intersection(lists["daily"].index)
    overlap = (
        float(
            sum(len(lists["daily"][u] & lists["full"][u]) / max(len(lists["full"][u]), 1) for u in common)
            / len(common)
        )
        if len(common)
        else None
    )
    shutil.rmtree(root, ignore_errors=True)
    del before
    daily_total, full_total = sum(daily_s.values()), sum(full_s.values())
    return {
        "orders": orders,
        "item_model": item_model,
        "day_partition": day,
        "rows": {p: sum(r.values()) for p, r in rows.items()},
        "day_ingest_seconds": round(ingest_s, 2),
        "history_ingest_seconds": round(history_ingest_s, 2),
        # the daily run with its ingest (one day staged) vs a full run with its ingest (every day staged)
        "daily_with_ingest_vs_full_with_ingest": round(
            (ingest_s + daily_total) / (history_ingest_s + ingest_s + full_total), 4
        ),
        "daily_seconds": {k: round(v, 2) for k, v in daily_s.items()},
        "full_seconds": {k: round(v, 2) for k, v in full_s.items()},
        "daily_total_seconds": round(daily_total, 2),
        "full_total_seconds": round(full_total, 2),
        "daily_vs_full": round(daily_total / full_total, 4),
        "daily_plans": {
            k: {"mode": v[0].mode, "reason": v[0].reason, "customers": len(v[0].customers), **v[1].metadata()}
            for k, v in daily_did.items()
        },
        "fingerprints_equal": {t: daily[t] == full[t] for t in daily},
        # share of customers whose segment (stored centroids) is the one a refit on today's profiles gives
        "segment_agreement_with_refit": round(
            float((segments["daily"] == segments["full"].reindex(segments["daily"].index)).mean()), 4
        ),
        "recommendations": {
            "recomputed_rows_equal_full": bool(fresh["daily"].equals(fresh["full"])),
            "recomputed_item_overlap_with_full": None if overlap is None else round(overlap, 4),
            "item_scope": daily_did["recommendations"][2].get("item", ""),
            "category_level_equal_full": bool(
                daily_recs[daily_recs["level"] == "category"]
                .reset_index(drop=True)[["customer_id", "rank", "item_id"]]
                .equals(
                    full_recs[full_recs["level"] == "category"].reset_index(drop=True)[
                        ["customer_id", "rank", "item_id"]
                    ]
                )
            ),
            "kept_users": int(kept["daily"]["customer_id"].nunique()),
            "kept_users_whose_list_a_full_refit_changes": int(stale_users),
            # popularity-served category level: kept lists lag today's counts until the weekly full refresh
            "kept_users_whose_category_list_a_full_refresh_changes": _changed_kept_lists(
                daily_recs, full_recs, recomputed, "category"
            ),
        },
    }


def _changed_kept_lists(daily: pd.DataFrame, full: pd.DataFrame, recomputed: set, level: str) -> int:
    """Customers the daily run did not rescore whose ``level`` list a full refresh gives differently."""
    kept = [f[(f["level"] == level) & ~f["customer_id"].isin(recomputed)] for f in (daily, full)]
    merged = kept[0].merge(kept[1], on=["customer_id", "rank"], how="outer", suffixes=("_d", "_f"))
    return int(merged.loc[merged["item_id_d"] != merged["item_id_f"], "customer_id"].nunique())


def _ingest_cell(c: dict) -> str:
    if "history_ingest_seconds" not in c:
        return "–"
    staged_all = c["history_ingest_seconds"] + c["day_ingest_seconds"]
    return (
        f"{c['day_ingest_seconds']:.1f} / {staged_all:.1f}, {c['daily_with_ingest_vs_full_with_ingest']:.3f}"
    )


def _overlap(r: dict) -> str:
    v = r.get("recomputed_item_overlap_with_full")
    return "–" if v is None else f"{v:.2f}"


def _category_stale(r: dict) -> str:
    v = r.get("kept_users_whose_category_list_a_full_refresh_changes")  # measured since 2026-12-01
    return "" if v is None else f"; {v:,}"


def render_md(results: dict) -> str:
    lines = [
        "# Incremental features and scoring: one new day vs full",
        "",
        (
            f"{results['machine']}. Synthetic orders split into a history partition and the last day, staged "
            "through the partitioned ingest; then interactions, user profiles (with segments) and "
            "recommendations "
            "(item level: the model below; category level: popularity), and category interactions (rows "
            "measured before it was incremental show –), incrementally after the day vs in full "
            "on the same staging. Only these steps are timed (framework-free functions the assets call), "
            "not the whole graph. See `benchmarks/incremental.py`."
        ),
        "",
        (
            "| orders | item model | daily s (interactions / category interactions / profiles / recs) | "
            "full s | daily / full | with ingest: day / all days staged (s), daily / full | "
            "tables equal | recs: recomputed rows equal / overlap@k with a full refit / kept users a refit "
            "would change (item; category) | commit | load avg before / after | measured |"
        ),
        "|---:|---|---|---|---:|---|---|---|---|---|---|",
    ]
    for c in results["cases"].values():
        d, f, r = c["daily_seconds"], c["full_seconds"], c["recommendations"]
        steps = ("interactions", "category_interactions", "user_profiles", "recommendations")
        lines.append(
            f"| {c['orders']:,} | {c['item_model']} | {c['daily_total_seconds']:.1f} ("
            + " / ".join(f"{d[k]:.1f}" if k in d else "–" for k in steps)
            + f") | {c['full_total_seconds']:.1f} ("
            + " / ".join(f"{f[k]:.1f}" if k in f else "–" for k in steps)
            + ") | "
            f"{c['daily_vs_full']:.3f} | {_ingest_cell(c)} | {all(c['fingerprints_equal'].values())}"
            + (
                f" (segments: {c['segment_agreement_with_refit']:.1%} as a refit)"
                if "segment_agreement_with_refit" in c
                else ""
            )
            + " | "
            f"{r['recomputed_rows_equal_full']} / {_overlap(r)} / "
            f"{r['kept_users_whose_list_a_full_refit_changes']:,}"
            + _category_stale(r)
            + f" of {r['kept_users']:,} | {c['commit']} | {c['load_before']} / {c['load_after']} | "
            f"{c['measured_at']} |"
        )
    for c in results["cases"].values():
        lines += [
            "",
            f"## {c['orders']:,} orders: what the daily run did (day ingest {c['day_ingest_seconds']:.1f} s)",
            "",
            "| step | mode | customers recomputed | new | changed | untouched | removed | reason |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for step, p in c["daily_plans"].items():
            lines.append(
                f"| {step} | {p['mode']} | {p['customers']:,} | {p['new_rows']:,} | {p['changed_rows']:,} | "
                f"{p['untouched_rows']:,} | {p['removed_rows']:,} | {p['reason']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, nargs="+", default=[100_000])
    p.add_argument("--item-model", default="als", help="model serving the item level (als, item_knn, ...)")
    p.add_argument("--root", default="/tmp/ecom_incremental")
    p.add_argument("--out", default="incremental")
    args = p.parse_args(argv)
    out_json = RESULTS / f"{args.out}.json"
    for orders in args.orders:
        before = [round(x, 2) for x in os.getloadavg()]
        case = run_case(orders, Path(args.root) / f"orders_{orders}", args.item_model)
        case["load_before"], case["load_after"] = before, [round(x, 2) for x in os.getloadavg()]
        case["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
        case["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(json.dumps(case, indent=1, default=str), flush=True)
        results = json.loads(out_json.read_text()) if out_json.exists() else {"cases": {}}
        results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores"
        results["cases"][f"{orders}:{args.item_model}"] = case
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(results, indent=1, default=str) + "\n")
        (RESULTS / f"{args.out}.md").write_text(render_md(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
