"""Item recommendations served by global or regional popularity for every customer: scoring every item vs
the shared-score shortcut of ``ml.recsys.pipeline.serve`` (only the columns that can reach a top k; for
regional popularity, the union of every region's), on a real warehouse.

    python benchmarks/serve_shared_scores.py --warehouse /tmp/ecom_load/daily_path_1000000/warehouse.duckdb
    python benchmarks/serve_shared_scores.py --warehouse ... --models regional_popularity

Both paths run in the same process on the same interactions (read once), one after the other; the lists must
be equal.  Results: ``benchmarks/results/serve_shared_scores.md`` / ``.json`` (merged per warehouse and
model)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))


class _EveryItem:
    """The fitted model without its class: serve() scores it against every item (the general path)."""

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        if name == "score_groups":  # hidden: what makes ranking take the shortcut
            raise AttributeError(name)
        return getattr(self._model, name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warehouse", required=True, type=Path)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--models", nargs="+", default=["popularity", "regional_popularity"])
    args = p.parse_args(argv)

    import duckdb

    from ecom_pipeline.incremental.interactions import read_interactions

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    con = duckdb.connect(str(args.warehouse), read_only=True)
    interactions = read_interactions(con)
    customers = con.execute(
        "SELECT customer_id, state FROM staging.customers WHERE customer_id IS NOT NULL"
    ).fetchdf()
    con.close()
    regions = customers.set_index(customers["customer_id"].astype(str))["state"]  # as the asset's regions
    out_json = RESULTS / "serve_shared_scores.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    all_equal = True
    for model_name in args.models:
        case = _case(args, interactions, regions, model_name, commit)
        all_equal = all_equal and case["lists_equal"]
        key = str(args.warehouse) if model_name == "popularity" else f"{args.warehouse}:{model_name}"
        results[key] = case
        out_json.write_text(json.dumps(results, indent=1) + "\n")
        print(json.dumps(case, indent=1), flush=True)
    lines = [
        "# Popularity-served item recommendations: every item scored vs the shared-score shortcut",
        "",
        f"x86_64, {os.cpu_count()} cores; `python benchmarks/serve_shared_scores.py`; both paths in one "
        "process on the same interactions (build_data and the model fit not timed: the same for both).",
        "",
        "| warehouse | model | interactions | users x items | most bought by one user | every item s | "
        "shared s | speed-up | lists equal | commit | load before -> after | measured |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---|---|---|",
    ]
    for c in results.values():
        la = " -> ".join(", ".join(f"{x:.1f}" for x in v) for v in c["load_before_after"])
        lines.append(
            f"| {Path(c['warehouse']).parent.name} | {c.get('model', 'popularity')} | "
            f"{c['interactions']:,} | "
            f"{c['users']:,} x {c['items']:,} | {c['most_items_bought_by_one_user']} | "
            f"{c['seconds']['every_item']} | {c['seconds']['shared_scores']} | {c['speedup']}x | "
            f"{c['lists_equal']} | {c['commit']} | {la} | {c['measured_at']} |"
        )
    (RESULTS / "serve_shared_scores.md").write_text("\n".join(lines) + "\n")
    return 0 if all_equal else 1


def _case(args, interactions, regions, model_name: str, commit: str) -> dict:
    from ecom_pipeline.ml.recsys.data import build_data
    from ecom_pipeline.ml.recsys.models import make_model
    from ecom_pipeline.ml.recsys.pipeline import serve

    load_before = os.getloadavg()
    user_regions = regions if model_name == "regional_popularity" else None
    data = build_data(interactions, "product_id", user_regions=user_regions)
    model = make_model(model_name).fit(data)
    common = dict(
        level="item",
        model_name=model_name,
        params={},
        k=args.k,
        user_regions=user_regions,
        item_names={},
        model_version="bench",
    )
    seconds, frames = {}, {}
    for name, fitted in (("every_item", _EveryItem(model)), ("shared_scores", model)):
        t0 = time.perf_counter()
        out, _ = serve(interactions, fitted=fitted, **common)
        seconds[name] = round(time.perf_counter() - t0, 1)
        frames[name] = out.sort_values(["customer_id", "rank"]).reset_index(drop=True)
    return {
        "warehouse": str(args.warehouse),
        "model": model_name,
        "interactions": len(interactions),
        "users": data.n_users,
        "items": data.n_items,
        "most_items_bought_by_one_user": int(data.purchased.getnnz(axis=1).max()),
        "rows": len(frames["shared_scores"]),
        "seconds": seconds,
        "speedup": round(seconds["every_item"] / max(seconds["shared_scores"], 1e-9), 1),
        "lists_equal": bool(frames["every_item"].equals(frames["shared_scores"])),
        "commit": commit,
        "load_before_after": [list(load_before), list(os.getloadavg())],
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


if __name__ == "__main__":
    sys.exit(main())
