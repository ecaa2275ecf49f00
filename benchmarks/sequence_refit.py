"""SASRec with and without the refit after a validation run that the time cap ended at its best epoch.

When the time cap stops the validation run while validation NDCG is still rising, a refit on all data stops
at the same cap after fewer epochs; with ``refit_when_capped=False`` ``SequenceRecommender.fit`` keeps the
validation run's network (scoring with every customer's full history) instead of paying a second
``max_seconds``.  This benchmark runs ``evaluate_sequence_models`` (the asset's own function) twice on the
same split of the real UK shop (``benchmarks/sequence_recommender.py``'s staging path), with the refit (the
default) and without it, and compares SASRec's fit time and NDCG@10 with a 95 % paired bootstrap over the same
returning customers.  Writes benchmarks/results/sequence_refit.{json,md} with the commit and the load.

    python benchmarks/sequence_refit.py [--max-seconds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sequence_recommender import RESULTS, commit_of_checkout, require_uk_shop, uk_interactions  # noqa: E402


def run(inter, regions, max_seconds: float, force_refit: bool) -> dict:
    from ecom_pipeline.ml.recsys import sequence as seq

    t0 = time.perf_counter()
    res = seq.evaluate_sequence_models(
        inter,
        models=("popularity", "sasrec"),
        params={"sasrec": {"max_seconds": max_seconds, "refit_when_capped": force_refit}},
        user_regions=regions,
        exclude_seen=False,
        log=lambda m: print(m, flush=True) if "epoch" not in m else None,
    )
    sas = res.fitted["sasrec"]
    return {
        "arm": "refit_when_capped=True (default)" if force_refit else "refit_when_capped=False",
        "seconds": round(time.perf_counter() - t0, 1),
        "sasrec_fit_seconds": round(res.fit_seconds["sasrec"], 1),
        "refit": sas.refit,
        "stopped": sas.stopped_early,
        "validation_curve": [round(v, 4) for v in sas.validation["curve"]] if sas.validation else [],
        "ndcg@10": res.metrics["sasrec"]["ndcg@10"],
        "popularity_ndcg@10": res.metrics["popularity"]["ndcg@10"],
        "users": res.users,
        "_per_user": res.per_user[("returning", "sasrec")],
    }


def markdown(res: dict) -> str:
    before, now = res["arms"]
    c = res["comparison"]
    lines = [
        "# SASRec: refit or not when the time cap ended the validation run at its best epoch",
        "",
        f"Real UK shop (Online Retail 2010-11, {res['notes']['customers']:,} customers, "
        f"{res['notes']['interactions']:,} interactions), protocol `repeats`, `max_seconds` = "
        f"{res['max_seconds']:g}; commit {res['commit']}, {res['date']}, 2 cores, load "
        f"{res['load_average_at_start'][0]:.2f} at start / {res['load_average_at_end'][0]:.2f} at end.",
        "",
        "| arm | SASRec fit s | refit | validation NDCG@10 by epoch | NDCG@10 (returning) |",
        "|---|---:|---|---|---:|",
    ]
    for a in (before, now):
        lines.append(
            f"| {a['arm']} | {a['sasrec_fit_seconds']} | {a['refit']} | {a['validation_curve']} | "
            f"{a['ndcg@10']:.4f} |"
        )
    ratio = now["sasrec_fit_seconds"] / before["sasrec_fit_seconds"]
    verdict = "no difference" if not c["significant"] else ("better" if c["diff"] > 0 else "WORSE")
    lines += [
        "",
        f"Fit time without / with the refit: **{ratio:.2f}x**. NDCG@10 without - with: {c['diff']:+.4f} "
        f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] (95 % paired bootstrap) over {c['n_units']:,} returning "
        f"customers: **{verdict}**.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    from ecom_pipeline.ml.evaluation import paired_bootstrap

    ap = argparse.ArgumentParser()
    # small enough that the cap ends the validation run at its best epoch on this shop (as 300 s does at 1M)
    ap.add_argument("--max-seconds", type=float, default=4.0)
    args = ap.parse_args()
    require_uk_shop()
    res = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit_of_checkout(),
        "load_average_at_start": os.getloadavg(),
        "max_seconds": args.max_seconds,
    }
    inter, regions, res["notes"] = uk_interactions()
    arms = [run(inter, regions, args.max_seconds, force_refit=f) for f in (True, False)]
    a, b = arms[1].pop("_per_user"), arms[0].pop("_per_user")
    both = a.index.intersection(b.index)
    res["comparison"] = paired_bootstrap(
        a.loc[both].to_numpy(), b.loc[both].to_numpy(), metric="ndcg@10", higher_is_better=True
    ).as_dict()
    res["arms"] = arms
    res["load_average_at_end"] = os.getloadavg()
    (RESULTS / "sequence_refit.json").write_text(json.dumps(res, indent=1, default=str))
    (RESULTS / "sequence_refit.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
