"""Behaviour check across commits: build the whole graph on one source, fingerprint what it wrote, compare.

``build`` runs ``python -m ecom_pipeline.demo`` (the ``full_pipeline`` job, what ``make demo`` runs) from the
checkout ``--repo`` (any commit: a ``git worktree`` of an older one works) into a fresh temporary data root
and Dagster home, then writes to ``--out`` (JSON):

* every ``raw``, ``staging`` and ``features`` table's ``table_fingerprint`` (row count + order-independent
  content hash), the per-run columns (``PER_RUN_COLUMNS``: load ids, load times, run ids) left out;
* every ``ml.model_metrics`` row without its per-run columns (``run_ts``, ``mlflow_run_id``);
* the commit of ``--repo``, the machine's load before/after and the build's wall time.

The fingerprints are computed by *this* checkout's code over the other checkout's warehouse file, so two
builds are hashed the same way whatever their commits.

``compare A.json B.json`` lists, for the tables both builds wrote, which fingerprints match; the tables only
one build wrote; and each model metric's two values side by side (a seed-to-seed spread needs repeated
builds: ``build --seed``).  ``--markdown`` appends the comparison to a file (``benchmarks/results/``).

    nice -n 10 python benchmarks/fingerprints.py build --repo /tmp/old --source synthetic --orders 1000 \
        --out /tmp/old_synth.json
    python benchmarks/fingerprints.py compare /tmp/old_synth.json /tmp/new_synth.json \
        --markdown benchmarks/results/fingerprints.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FINGERPRINT_SCHEMAS = ("raw", "staging", "features")
METRIC_KEY = ("model", "task", "dataset", "split", "metric", "baseline")
METRIC_VALUES = ("value", "baseline_value", "ci_low", "ci_high", "n_units", "significant")
# Variables a build must not inherit from the caller's shell: each build gets its own root and stores.
BUILD_ROOT = Path(tempfile.gettempdir()) / "fingerprints_build"  # one builder at a time (see the module doc)
BUILD_PSEUDONYM_KEY = "fingerprints-build-key-not-a-secret-0123456789"
_BUILD_OWNED = (
    "ECOM_DATA_ROOT",
    "ECOM_WAREHOUSE",
    "ECOM_SNAPSHOT",
    "MLFLOW_TRACKING_URI",
    "DAGSTER_HOME",
    "ECOM_DATA_SOURCE",
    "ECOM_DATA_DIR",
    "ECOM_MAPPING",
    "ECOM_SYNTHETIC_ORDERS",
    "ECOM_SYNTHETIC_SEED",
    "ECOM_PSEUDONYM_KEY",
    "PYTHONPATH",
)


def _commit(repo: Path) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "-1", "--format=%h %s"], check=False, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
        check=False,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip()[:90] + (" (+ uncommitted changes)" if dirty else "")


def build_env(repo: Path, root: Path, args) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _BUILD_OWNED}
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(repo / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")  # the pool limits
    # One pseudonym key for every build (unset, each data root generates its own and every pseudonymised
    # column differs); one root path too: the synthetic source writes absolute image paths into raw.products.
    env |= {
        "PYTHONPATH": str(repo),
        "DAGSTER_HOME": str(home),
        "ECOM_DATA_ROOT": str(root / "data"),
        "ECOM_DATA_SOURCE": args.source,
        "ECOM_SYNTHETIC_SEED": str(args.seed),
        "ECOM_PSEUDONYM_KEY": BUILD_PSEUDONYM_KEY,
    }
    if args.source == "synthetic":
        env["ECOM_SYNTHETIC_ORDERS"] = str(args.orders)
    else:
        env["ECOM_DATA_DIR"] = str(Path(args.data_dir).resolve())
    return env


def fingerprint_warehouse(warehouse: Path) -> dict:
    import duckdb

    from ecom_pipeline.warehouse.tables import PER_RUN_COLUMNS, warehouse_fingerprints

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        tables = warehouse_fingerprints(con, FINGERPRINT_SCHEMAS, exclude_columns=PER_RUN_COLUMNS)
        columns = {t: column_hashes(con, t, PER_RUN_COLUMNS) for t in tables}
        has_metrics = con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = 'ml' AND table_name = 'model_metrics'"
        ).fetchall()[0][0]
        metrics = []
        if has_metrics:
            cols = [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE "
                    "table_schema = 'ml' AND table_name = 'model_metrics'"
                ).fetchall()
            ]
            wanted = [c for c in (*METRIC_KEY, *METRIC_VALUES) if c in cols]
            df = con.execute(f"SELECT {', '.join(wanted)} FROM ml.model_metrics ORDER BY ALL").df()
            metrics = json.loads(df.to_json(orient="records"))
    finally:
        con.close()
    return {
        "tables": {t: {"rows": rows, "hash": h} for t, (rows, h) in tables.items()},
        "columns": columns,
        "model_metrics": metrics,
    }


def column_hashes(con, qualified: str, exclude) -> dict[str, str]:
    """Per column, the exact sum of DuckDB's ``hash()`` over its values: says *which* columns of a table whose
    fingerprint changed differ (a column added by a later commit, or changed values), order-independently."""
    from ecom_pipeline.warehouse.tables import quote_ident

    schema, name = qualified.split(".", 1)
    cols = [
        r[0]
        for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [schema, name],
        ).fetchall()
        if r[0] not in exclude
    ]
    if not cols:
        return {}
    sums = ", ".join(f"coalesce(sum(hash({quote_ident(c)}))::HUGEINT, 0)" for c in cols)
    values = con.execute(f"SELECT {sums} FROM {quote_ident(schema)}.{quote_ident(name)}").fetchall()[0]
    return {c: format(int(v), "x") for c, v in zip(cols, values, strict=True)}


def cmd_build(args) -> int:
    repo = Path(args.repo).resolve()
    root = BUILD_ROOT
    shutil.rmtree(root, ignore_errors=True)
    env = build_env(repo, root, args)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(root / "demo.log", "w") as log:
        rc = subprocess.run(
            [sys.executable, "-m", "ecom_pipeline.demo", "--job", args.job, "--log-level", "WARNING"],
            check=False,
            cwd=repo,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
    elapsed = time.perf_counter() - started
    tail = (root / "demo.log").read_text(errors="replace").splitlines()
    summary_at = max(
        (i for i, line in enumerate(tail) if line.startswith("run ")), default=max(0, len(tail) - 40)
    )
    result = {
        "commit": _commit(repo),
        "repo": str(repo),
        "source": args.source,
        "job": args.job,
        "orders": args.orders if args.source == "synthetic" else None,
        "seed": args.seed,
        "demo_rc": rc,
        "wall_s": round(elapsed, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "demo_summary": tail[summary_at:],
        **fingerprint_warehouse(root / "data" / "warehouse.duckdb"),
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    kept = shutil.move(str(root), tempfile.mkdtemp(prefix="fingerprints_")) if args.keep else None
    shutil.rmtree(root, ignore_errors=True)
    print(
        f"{args.out}: {len(result['tables'])} tables, {len(result['model_metrics'])} metric rows, "
        f"demo rc {rc}, {elapsed:.0f} s" + (f"; build kept in {kept}" if kept else "")
    )
    return 0


def _column_diff(a: dict, b: dict, table: str) -> str:
    ca, cb = a.get("columns", {}).get(table), b.get("columns", {}).get(table)
    if ca is None or cb is None:
        return "no per-column hashes"
    added, dropped = [c for c in cb if c not in ca], [c for c in ca if c not in cb]
    changed = [c for c in ca if c in cb and ca[c] != cb[c]]
    parts = [
        f"columns added: {', '.join(added)}" if added else "",
        f"columns dropped: {', '.join(dropped)}" if dropped else "",
        f"shared columns with other values: {', '.join(changed)}"
        if changed
        else "every shared column has the same values",
    ]
    return "; ".join(p for p in parts if p)


def _metric_map(rows: list[dict]) -> dict[tuple, dict]:
    return {tuple(str(r.get(k)) for k in METRIC_KEY): r for r in rows}


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _within_interval(before: dict, after: dict) -> bool | None:
    """Whether the value moved by less than half the width of the after row's model-vs-baseline interval
    (the sampling spread of that comparison); None when the row has no interval."""
    low, high, va, vb = (after.get("ci_low"), after.get("ci_high"), before.get("value"), after.get("value"))
    if not all(isinstance(x, float | int) and math.isfinite(x) for x in (low, high, va, vb)):
        return None
    return abs(vb - va) <= (high - low) / 2


def _build_line(build: dict) -> str:
    return (
        f"`{build['commit']}`: demo rc {build['demo_rc']}, {build['wall_s']} s, load (1/5/15 min) "
        f"{build['load_before']} -> {build['load_after']}"
    )


def compare(a: dict, b: dict) -> tuple[list[str], bool]:
    """Markdown lines comparing build ``a`` (before) with build ``b`` (after), and whether all shared
    tables match."""
    ta, tb = a["tables"], b["tables"]
    shared = sorted(set(ta) & set(tb))
    differ = [t for t in shared if ta[t] != tb[t]]
    lines = [
        f"### {a['source']}"
        + (f" ({a['orders']} orders)" if a.get("orders") else "")
        + f", job {a.get('job', 'full_pipeline')} / {b.get('job', 'full_pipeline')}",
        "",
        f"* before: {_build_line(a)}",
        f"* after: {_build_line(b)}",
        (
            f"* tables in both: {len(shared)}; fingerprints equal: {len(shared) - len(differ)}; "
            f"different: {len(differ)}"
        ),
    ]
    for t in differ:
        lines.append(f"  * `{t}`: {ta[t]['rows']} vs {tb[t]['rows']} rows; " + _column_diff(a, b, t))
    for label, only in (
        ("only before", sorted(set(ta) - set(tb))),
        ("only after", sorted(set(tb) - set(ta))),
    ):
        lines.append(f"* tables {label}: " + (", ".join(f"`{t}`" for t in only) or "none"))
    ma, mb = _metric_map(a["model_metrics"]), _metric_map(b["model_metrics"])
    both = sorted(set(ma) & set(mb))
    changed = [k for k in both if not all(_close(ma[k].get(c), mb[k].get(c)) for c in METRIC_VALUES)]
    lines.append(
        f"* model metric rows in both: {len(both)}; equal: {len(both) - len(changed)}; "
        f"different: {len(changed)}; only before: {len(set(ma) - set(mb))}; only after: "
        f"{len(set(mb) - set(ma))}"
    )
    if changed:
        inside = sum(_within_interval(ma[k], mb[k]) is True for k in changed)
        flips = sum(str(ma[k].get("significant")) != str(mb[k].get("significant")) for k in changed)
        lines += [
            f"* of the {len(changed)} different rows: {inside} moved by less than half their interval "
            f"(the model-vs-baseline interval of the *after* row); the significance flag changed in {flips}",
            "",
            "| model | task | split | metric | before | after | before baseline | after baseline "
            "| |Δ| inside half interval | significant before → after |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for k in changed:
            ra, rb = ma[k], mb[k]
            lines.append(
                f"| {k[0]} | {k[1]} | {k[3]} | {k[4]} | {_num(ra.get('value'))} | {_num(rb.get('value'))} | "
                f"{_num(ra.get('baseline_value'))} | {_num(rb.get('baseline_value'))} | "
                f"{ {True: 'yes', False: 'no', None: 'no interval'}[_within_interval(ra, rb)] } | "
                f"{ra.get('significant')} → {rb.get('significant')} |"
            )
    for label, only in (
        ("only before", sorted(set(ma) - set(mb))),
        ("only after", sorted(set(mb) - set(ma))),
    ):
        if only:
            lines.append(f"* metric rows {label}: " + ", ".join(f"{k[0]}/{k[4]} ({k[3]})" for k in only))
    return lines + [""], not differ


def cmd_compare(args) -> int:
    a, b = (json.loads(Path(p).read_text()) for p in (args.before, args.after))
    lines, equal = compare(a, b)
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write(text + "\n")
    return 0 if equal else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the graph from --repo into a temp root and fingerprint it")
    b.add_argument("--repo", default=str(REPO), help="checkout to build (default: this one)")
    b.add_argument("--source", choices=["synthetic", "olist"], default="synthetic")
    b.add_argument("--orders", type=int, default=1000, help="synthetic orders")
    b.add_argument("--seed", type=int, default=42, help="synthetic seed")
    b.add_argument(
        "--data-dir",
        default=str(REPO.parent / "shared" / "datasets" / "olist"),
        help="the Olist CSV folder (source olist)",
    )
    b.add_argument(
        "--job",
        default="full_pipeline",
        help="job the demo runs: full_pipeline (every asset) or "
        "full_refresh (raw, staging and features only: no model metrics, a fraction of the time)",
    )
    b.add_argument("--out", required=True)
    b.add_argument("--keep", action="store_true", help="keep the temporary build root")
    c = sub.add_parser("compare", help="compare two build JSON files (exit 1 when a shared table differs)")
    c.add_argument("before")
    c.add_argument("after")
    c.add_argument("--markdown", help="append the comparison to this Markdown file")
    args = parser.parse_args(argv)
    return cmd_build(args) if args.command == "build" else cmd_compare(args)


if __name__ == "__main__":
    sys.exit(main())
