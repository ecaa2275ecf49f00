"""The recommender training steps that read every interaction (``models/sequence_recommender``,
``models/recommender_evaluation``, ``models/two_tower_recommender``) on a kept warehouse, at a baseline
commit and at this checkout, each step in a fresh process (the asset in process through Dagster, deep
models capped short): wall time and peak RSS side by side, plus what each run served or evaluated.

    python benchmarks/recommender_steps.py --root /tmp/bench1m/daily_path_1000000 --baseline 3d75602

``--root``: a data root left by ``benchmarks/load.py --daily`` (its ``warehouse.duckdb``, MLflow store and
mapping); the runs write the step's own tables there, as the step does.  The baseline runs from a temporary
``git worktree``.  Results: ``benchmarks/results/<--out>.md`` / ``.json`` (with both commits and the
load average).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# step -> its run config with the deep models' time caps (seconds) filled in
STEPS = {
    "sequence_recommender": lambda caps: {"max_seconds": caps, "two_tower_max_seconds": caps},
    "recommender_evaluation": lambda caps: {},
    "two_tower_recommender": lambda caps: {"max_seconds": caps},
}
REPORTED = ("served", "evaluated_customers", "winners", "decisions", "comparison")


def _child(root: Path, step: str, caps: float) -> None:
    """Run the step once (this process is the measured one) and print its report as the last line."""
    import dagster as dg

    from ecom_pipeline.config import Settings
    from ecom_pipeline.definitions import build_definitions

    t0 = time.perf_counter()
    job = build_definitions(Settings.from_env()).resolve_job_def("training")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(["models", step])],
            run_config={"ops": {f"models__{step}": {"config": STEPS[step](caps)}}},
            raise_on_error=False,
        )
    meta = {}
    for event in result.all_events:
        if event.is_step_materialization:
            m = event.event_specific_data.materialization.metadata
            meta = {k: getattr(v, "value", str(v)) for k, v in m.items() if k in REPORTED}
    report = {
        "success": result.success,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **meta,
    }
    print("REPORT " + json.dumps(report, default=str), flush=True)


def _dagster_home(checkout: Path) -> str:
    """A fresh DAGSTER_HOME with the checkout's dagster.yaml (its pool limits; the run is ephemeral)."""
    home = Path(tempfile.mkdtemp(prefix="recsteps_home_"))
    shutil.copy(checkout / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return str(home)


def _run(checkout: Path, root: Path, step: str, caps: float) -> dict:
    mapping = sorted(root.glob("mapping_*.yaml"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECOM_", "MLFLOW_"))}
    env.update(
        PYTHONPATH=str(checkout),
        ECOM_DATA_ROOT=str(root),
        ECOM_DATA_SOURCE="mapped" if mapping else "synthetic",
        DAGSTER_HOME=_dagster_home(checkout),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    if mapping:
        env["ECOM_MAPPING"] = str(mapping[-1])
    cmd = [
        sys.executable,
        str(checkout / "benchmarks" / Path(__file__).name),
        "--child",
        step,
        "--root",
        str(root),
    ]
    out = subprocess.run(
        cmd + ["--caps", str(caps)], env=env, cwd=checkout, capture_output=True, text=True, check=False
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("REPORT ")]
    if not lines:
        raise SystemExit(f"no report from {checkout}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("REPORT ") :])


def _outcome(r: dict) -> str:
    """What the step served (sequence: per segment) or which model won per level, names only."""
    served = r.get("served") or r.get("winners")
    if isinstance(served, dict):
        return ", ".join(f"{k}: {str(v).split(' (')[0]}" for k, v in served.items())
    first = str(r.get("comparison", "")).split(";")[
        0
    ]  # the two-tower: "ndcg@10 on ...: two_tower 0.0017 ..."
    return first.split("): ")[-1] if "): " in first else first


def markdown(meta: dict, runs: list[dict]) -> list[str]:
    lines = [
        f"# Recommender training steps on {Path(meta['root']).name}",
        "",
        f"{meta['when']}, commit {meta['commit']}, {meta['cores']} cores, load "
        f"{meta['load_average_before']} -> {meta['load_average_after']}; SASRec and two-tower capped at "
        f"{meta['caps_s']:.0f} s; each step in a fresh process, in process through Dagster; per step the "
        "baseline first, then this checkout.",
        "",
        "| step | checkout | ok | s | peak RSS MB | served / outcome |",
        "|---|---|---|---:|---:|---|",
    ]
    lines += [
        f"| {r['step']} | {r['checkout']} | {r['success']} | {r['seconds']} | {r['peak_rss_mb']:,} | "
        f"{_outcome(r)} |"
        for r in runs
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--baseline", required=False, help="commit to compare with (default: none)")
    p.add_argument("--caps", type=float, default=20.0, help="max_seconds of SASRec and the two-tower")
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    p.add_argument("--child", choices=list(STEPS), help=argparse.SUPPRESS)
    p.add_argument("--out", default="recommender_steps_1m")
    args = p.parse_args(argv)
    if args.child:
        _child(args.root, args.child, args.caps)
        return 0
    sys.path.insert(0, str(REPO))
    from benchmarks.step_threads import run_meta

    load_before = [round(x, 2) for x in os.getloadavg()]
    checkouts, tree = {"this checkout": REPO}, None
    if args.baseline:
        tree = Path(tempfile.mkdtemp(prefix="recsteps_base_")) / "tree"
        subprocess.run(["git", "worktree", "add", "-q", str(tree), args.baseline], cwd=REPO, check=True)
        # this script into the baseline's tree, so both runs are measured the same way
        (tree / "benchmarks" / Path(__file__).name).write_text(Path(__file__).read_text())
        checkouts = {f"baseline {args.baseline}": tree, **checkouts}
    runs = []
    try:
        for step in args.steps:  # per step the baseline, then this checkout: the same machine state for both
            for name, checkout in checkouts.items():
                runs.append({"step": step, "checkout": name, **_run(checkout, args.root, step, args.caps)})
                print(json.dumps(runs[-1], default=str), flush=True)
    finally:
        if tree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
    meta = run_meta(load_before) | {"root": str(args.root), "caps_s": args.caps}
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1, default=str))
    lines = markdown(meta, runs)
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
